//! Whether Redis may evict quotad's keys. Every key quotad writes has a TTL, so under any `maxmemory-policy`
//! but `noeviction` a full Redis drops them: a level dropped admits up to a full burst again, and a lease's
//! or level's in-flight count dropped lets more leases in than the limit, with no error anywhere. So the
//! store reads `INFO memory` (every primary's, in a Cluster) when it starts and every minute, warns while
//! any would evict, and says so in `quotad_store_evicting`. With `noeviction`, a full Redis refuses the
//! steps that could grow it (each resource's `on_store_error` applies) and still ends leases.

use std::sync::atomic::Ordering;

use ::redis::Value;

use super::RedisStore;

/// How often the policy is read again (it can change under a running Redis with `CONFIG SET`).
const EVERY_MS: u64 = 60_000;

/// The `(maxmemory, maxmemory_policy)` of each `INFO memory` text in `v` (one per node in a Cluster).
fn policies(v: &Value) -> Vec<(u64, String)> {
    let mut texts = Vec::new();
    collect(v, &mut texts);
    texts
        .iter()
        .map(|t| {
            let field = |name: &str| {
                t.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let max = field("maxmemory").and_then(|m| m.parse().ok()).unwrap_or(0);
            (max, field("maxmemory_policy").unwrap_or("").to_owned())
        })
        .collect()
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => out.push(text.clone()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(_, i)| collect(i, out)),
        _ => {}
    }
}

/// The policy of the first node that would evict quotad's keys: a memory limit and a policy other than
/// `noeviction` (without a limit, nothing is evicted).
fn evicting(v: &Value) -> Option<String> {
    policies(v)
        .into_iter()
        .find(|(max, policy)| *max > 0 && !policy.is_empty() && policy != "noeviction")
        .map(|(_, policy)| policy)
}

impl RedisStore {
    /// Reads Redis's eviction policy when a minute has passed since it last did (or `force`); warns while
    /// it would evict quotad's keys (when that starts, then once an hour).
    pub async fn check_eviction(&self, force: bool) {
        let now_ms = super::unix_ms();
        let last = self.eviction_checked_ms.load(Ordering::Relaxed);
        if !force && now_ms.saturating_sub(last) < EVERY_MS {
            return;
        }
        self.eviction_checked_ms.store(now_ms, Ordering::Relaxed);
        let Ok(info) = self.command(::redis::cmd("INFO").arg("memory")).await else {
            return;
        };
        let policy = evicting(&info);
        let was = self.evicting.swap(policy.is_some(), Ordering::Relaxed);
        let hourly =
            now_ms.saturating_sub(self.eviction_warned_ms.load(Ordering::Relaxed)) >= 3_600_000;
        if let Some(policy) = policy
            && (!was || hourly)
        {
            self.eviction_warned_ms.store(now_ms, Ordering::Relaxed);
            tracing::warn!(
                maxmemory_policy = %policy,
                "Redis may evict quotad's keys when full (each evicted level admits up to a burst again, \
                 an evicted in-flight count lets more leases in): set maxmemory-policy noeviction"
            );
        }
    }

    /// True while Redis (any primary) has a memory limit and a policy that evicts.
    pub fn is_evicting(&self) -> bool {
        self.evicting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(max: u64, policy: &str) -> Value {
        Value::BulkString(
            format!("# Memory\r\nused_memory:1000\r\nmaxmemory:{max}\r\nmaxmemory_human:1M\r\nmaxmemory_policy:{policy}\r\n")
                .into_bytes(),
        )
    }

    #[test]
    fn only_a_limit_with_an_evicting_policy_evicts() {
        assert_eq!(
            evicting(&info(0, "allkeys-lru")),
            None,
            "no limit: nothing evicted"
        );
        assert_eq!(evicting(&info(1 << 30, "noeviction")), None);
        assert_eq!(
            evicting(&info(1 << 30, "volatile-lru")).as_deref(),
            Some("volatile-lru")
        );
        // `maxmemory_human` is not `maxmemory`.
        assert_eq!(
            policies(&info(5, "noeviction")),
            vec![(5, "noeviction".to_owned())]
        );
    }

    #[test]
    fn any_cluster_primary_that_evicts_counts() {
        let cluster = Value::Map(vec![
            (
                Value::SimpleString("a:1".into()),
                info(1 << 30, "noeviction"),
            ),
            (
                Value::SimpleString("b:2".into()),
                info(1 << 30, "allkeys-lfu"),
            ),
        ]);
        assert_eq!(evicting(&cluster).as_deref(), Some("allkeys-lfu"));
        assert_eq!(
            evicting(&Value::Nil),
            None,
            "an answer without INFO says nothing"
        );
    }
}
