//! Validating the store: `store = "memory" | "redis"` and `[redis]`.

use std::time::Duration;

use super::{
    ConfigError,
    file::RedisSection,
    validate::{at_most, duration, invalid, positive},
};
use crate::engine::{RedisLayout as Layout, RedisSettings, Rules, TimeSource};

/// Where quota state lives.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StoreSettings {
    /// In this process (the embedded default): exact, fastest, forgotten on restart, one node only.
    #[default]
    Memory,
    /// In Redis, shared by every node pointed at it.
    Redis(RedisSettings),
}

/// `store` and `[redis]`, checked against the rules (a Redis store keeps deficits in exact doubles).
pub fn store(
    kind: Option<&str>,
    r: &RedisSection,
    rules: &Rules,
) -> Result<StoreSettings, ConfigError> {
    match kind.unwrap_or("memory") {
        "memory" => {
            // What the store can hold, checked here too so a config check says so before a start.
            at_most(
                "capacity.max_leases",
                rules.capacity.max_leases,
                crate::engine::MemoryStore::MAX_LEASES,
            )?;
            Ok(StoreSettings::Memory)
        }
        "redis" => {
            let settings = redis(r)?;
            exact_in_redis(rules)?;
            Ok(StoreSettings::Redis(settings))
        }
        other => Err(invalid(
            "store",
            format!("'{other}' is not one of: memory, redis"),
        )),
    }
}

fn redis(r: &RedisSection) -> Result<RedisSettings, ConfigError> {
    let d = RedisSettings::default();
    for url in r.url.iter().chain(&r.cluster) {
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Err(invalid(
                "redis.url",
                format!("'{url}' is not a redis:// URL"),
            ));
        }
    }
    if r.url.is_some() && !r.cluster.is_empty() {
        return Err(invalid(
            "redis.cluster",
            "give either redis.url or redis.cluster, not both",
        ));
    }
    let prefix = r.prefix.clone().unwrap_or(d.prefix);
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_control) {
        return Err(invalid(
            "redis.prefix",
            "must not contain braces or control characters",
        ));
    }
    let time = match r.time.as_deref().unwrap_or("redis") {
        "redis" => TimeSource::Redis,
        "node" => TimeSource::Node,
        other => {
            return Err(invalid(
                "redis.time",
                format!("'{other}' is not one of: redis, node"),
            ));
        }
    };
    let max_in_flight = r.max_in_flight.unwrap_or(d.max_in_flight);
    if !(1..=100_000).contains(&max_in_flight) {
        return Err(invalid(
            "redis.max_in_flight",
            "must be between 1 and 100000",
        ));
    }
    let timeout = positive(
        "redis.timeout",
        duration("redis.timeout", r.timeout.as_ref(), d.timeout)?,
    )?;
    if timeout > Duration::from_secs(60) {
        return Err(invalid("redis.timeout", "must be at most 60s"));
    }
    Ok(RedisSettings {
        url: if r.cluster.is_empty() {
            r.url.clone().or(d.url)
        } else {
            None
        },
        cluster: r.cluster.clone(),
        prefix,
        timeout,
        max_in_flight,
        time,
        layout: match r.layout.as_deref().unwrap_or("readable") {
            "readable" => Layout::Readable,
            "compact" => Layout::Compact,
            other => {
                return Err(invalid(
                    "redis.layout",
                    format!("'{other}' is not one of: readable, compact"),
                ));
            }
        },
    })
}

/// What the Redis store cannot hold exactly, said by a config check before a start too.
fn exact_in_redis(rules: &Rules) -> Result<(), ConfigError> {
    crate::engine::RedisStore::check_rules(rules).map_err(|e| match e {
        crate::engine::EngineError::InvalidArgument { field, problem } => invalid(field, problem),
        other => invalid("resources", other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{StoreSettings, load_str};

    fn err(toml: &str) -> String {
        load_str(toml).unwrap_err().to_string()
    }

    const RULE: &str = "[[resources]]\nname = \"a\"\nrate = { limit = 10 }\n";

    #[test]
    fn the_store_and_its_settings_are_checked_naming_the_key() {
        assert!(
            err(&format!("store = \"etcd\"\n{RULE}"))
                .contains("store: 'etcd' is not one of: memory, redis")
        );
        assert!(
            err(&format!(
                "store = \"redis\"\n[redis]\nurl = \"http://x\"\n{RULE}"
            ))
            .contains("redis.url")
        );
        assert!(
            err(&format!(
                "store = \"redis\"\n[redis]\nprefix = \"a{{b\"\n{RULE}"
            ))
            .contains("redis.prefix")
        );
        assert!(
            err(&format!(
                "store = \"redis\"\n[redis]\ntime = \"gps\"\n{RULE}"
            ))
            .contains("redis.time")
        );
        assert!(
            err(&format!(
                "store = \"redis\"\n[redis]\ntimeout = \"0s\"\n{RULE}"
            ))
            .contains("redis.timeout")
        );
        assert!(
            err(&format!(
                "store = \"redis\"\n[redis]\nurl = \"redis://a\"\ncluster = [\"redis://b\"]\n{RULE}"
            ))
            .contains("redis.cluster")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\nrate = { limit = 1 }\non_store_error = \"maybe\"\n")
                .contains("resources[0] (\"a\").on_store_error")
        );
        // Final grants are never charged: a debt bound for them is a mistake, named.
        assert!(
            err("[[resources]]\nname = \"a\"\nrate = { limit = 1 }\nsettlement = false\nmax_debt = 3\n")
                .contains("resources[0] (\"a\").max_debt: settlement = false")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\nrate = { limit = 1 }\nsettlement = \"maybe\"\n")
                .contains("settlement")
        );
        // local_share: its keys' ranges, and what its grants cannot hold, named.
        let shared = |rest: &str| {
            err(&format!(
                "[[resources]]\nname = \"h\"\nrate = {{ limit = 9 }}\n{rest}"
            ))
        };
        assert!(
            shared("local_share = { max_fraction = 0 }")
                .contains("resources[0] (\"h\").local_share.max_fraction: 0 is out of range")
        );
        assert!(shared("local_share = { max_fraction = 1.5 }").contains("max_fraction"));
        assert!(
            shared("local_share = { max_fraction = 0.1, ttl = \"0s\" }")
                .contains("local_share.ttl: must be greater than zero")
        );
        assert!(
            shared("local_share = { max_fraction = 0.1, ttl = \"1m\" }")
                .contains("local_share.ttl: must be at most 10s")
        );
        assert!(shared("local_share = { max_fraction = 0.1, size = 3 }").contains("size"));
        for (key, what) in [
            ("concurrency = 3", "a concurrency limit"),
            ("settlement = true", "settlement = true"),
            ("shadow = true", "shadow = true"),
            ("breaker = { consecutive_failures = 1 }", "a breaker"),
        ] {
            let e = shared(&format!("{key}\nlocal_share = {{ max_fraction = 0.1 }}"));
            assert!(
                e.contains("resources[0] (\"h\").local_share: a slice's grants are final")
                    && e.contains(what),
                "{key}: {e}"
            );
        }
        assert!(
            err("[[resources]]\nname = \"c\"\nconcurrency = 2\nlocal_share = { max_fraction = 0.1 }\n")
                .contains("local_share")
        );
        assert!(
            shared("local_share = { max_fraction = 0.1 }\nmax_debt = 3")
                .contains("max_debt: settlement = false")
        );
        let ok = crate::config::load_str(
            "[[resources]]\nname = \"partner.hot\"\nrate = { limit = 100000, period = \"1s\" }\n\
             local_share = { max_fraction = 0.05, ttl = \"200ms\" }\n",
        )
        .expect("the documented example loads");
        let rule = ok.rules.resolve("partner.hot").expect("its rule");
        assert!(!rule.settlement, "a slice's grants are final");
        assert_eq!(
            rule.local_share.map(|s| (s.max_fraction, s.ttl)),
            Some((0.05, std::time::Duration::from_millis(200)))
        );
        // One token a day with a burst of 200 and as much debt: 400 days of refill, past exact doubles.
        assert!(
            err("store = \"redis\"\n[[resources]]\nname = \"slow\"\nrate = { limit = 1, period = \"1d\", burst = 200 }\n")
                .contains("104 days")
        );
        // A window keeps its period in nanoseconds: 200 days is past them too (the memory store keeps it).
        let window = "[[resources]]\nname = \"w\"\nrate = { limit = 5, period = \"4800h\", algorithm = \"fixed_window\" }\n";
        assert!(err(&format!("store = \"redis\"\n{window}")).contains("104 days"));
        assert!(crate::config::load_str(window).is_ok());
    }

    #[test]
    fn the_lease_cap_is_the_memory_stores() {
        assert!(
            err(&format!("[capacity]\nmax_leases = 20000000\n{RULE}"))
                .contains("capacity.max_leases")
        );
        let s = load_str(&format!(
            "store = \"redis\"\n[capacity]\nmax_leases = 20000000\n{RULE}"
        ))
        .unwrap();
        assert!(matches!(s.store, StoreSettings::Redis(_)));
    }
}
