//! [`Homes`]: the in-memory store's handles on the resource-wide state of the exact rules in force. An exact
//! rule (one resource, named as the rule) has one resource-wide cell; the store finds it in the level table on
//! the rule's first acquire and keeps it here, by the rule's index in its rule set
//! ([`Resolution::Exact`]), so later acquires lock the cell directly: no hashing of the name, no map shard
//! lock, no reference counted.
//!
//! The handles belong to one rule set: [`apply`](crate::engine::Store::apply) of a reloaded set builds new,
//! empty ones, which find the same cells again (state is kept). A plan resolved against another set (a
//! request that raced a reload) finds no handle and goes to the table. The store never evicts the
//! resource-wide cell of a rule in force (they are as many as the configured exact rules); a cell whose rule
//! a reload removed may be evicted, and a handle still pointing at it sees the cell's `evicted` flag and
//! goes to the table too.
//!
//! [`Resolution::Exact`]: crate::engine::Resolution::Exact

use std::{fmt, sync::OnceLock};

use super::table::Shared;
use crate::engine::{Resolution, Rules, level::LevelCell};

/// See the module docs.
#[derive(Default)]
pub struct Homes {
    /// The rule set these handles belong to ([`Rules::id`]).
    set: u64,
    /// One per exact rule, by index; each set once, on that rule's first acquire.
    cells: Box<[OnceLock<Shared<LevelCell>>]>,
}

impl Homes {
    /// Empty handles for the exact rules of `rules`.
    pub fn new(rules: &Rules) -> Self {
        Self {
            set: rules.id(),
            cells: (0..rules.exact_len()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The rule set these handles belong to.
    pub fn get_set(&self) -> u64 {
        self.set
    }

    /// The handle slot of an exact rule resolved against this rule set; `None` for a pattern or another
    /// rule set.
    fn slot(&self, how: Resolution) -> Option<&OnceLock<Shared<LevelCell>>> {
        match how {
            Resolution::Exact { set, index } if set == self.set => self.cells.get(index as usize),
            _ => None,
        }
    }

    /// The cell, once found.
    #[cfg(test)]
    pub fn get(&self, how: Resolution) -> Option<&Shared<LevelCell>> {
        self.slot(how)?.get()
    }

    /// The cell of the exact rule `how` names, found with `find` the first time (if two threads race, both
    /// find the same table entry and one keeps it); `Ok(None)` when `how` is not of this rule set.
    pub fn get_or_try_init<E>(
        &self,
        how: Resolution,
        find: impl FnOnce() -> Result<Shared<LevelCell>, E>,
    ) -> Result<Option<&Shared<LevelCell>>, E> {
        let Some(slot) = self.slot(how) else {
            return Ok(None);
        };
        if let Some(cell) = slot.get() {
            return Ok(Some(cell));
        }
        let cell = find()?;
        Ok(Some(slot.get_or_init(|| cell)))
    }
}

impl fmt::Debug for Homes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = self.cells.iter().filter(|c| c.get().is_some()).count();
        write!(
            f,
            "Homes(set {}, {found} of {} found)",
            self.set,
            self.cells.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        pin::pin,
        sync::Arc,
        task::{Context, Poll, Waker},
    };

    use crate::{
        clock::Nanos,
        config,
        engine::{Acquire, MemoryStore, Outcome, Plan, Release, Rules, Store, memory::table::lock},
    };

    const SEC: Nanos = 1_000_000_000;

    fn ready<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => unreachable!("in-memory store futures are always ready"),
        }
    }

    fn rules(toml: &str) -> Rules {
        config::load_str(toml).expect("test config").rules
    }

    const EXACT_AND_GLOB: &str = r#"
[[resources]]
name = "r"
rate = { limit = 1, period = "1s", burst = 5 }
[[resources]]
name = "g.*"
rate = { limit = 1, period = "1s", burst = 5 }
"#;

    fn acquire(store: &MemoryStore, rules: &Rules, resource: &str, now: Nanos) -> u64 {
        let req = Acquire {
            resource: resource.into(),
            permits: 1,
            ..Default::default()
        };
        let (rule, how) = rules.resolve_kind(resource).expect("rule");
        let plan = Plan::build(rule, how, &req).expect("plan");
        let d = store
            .acquire_ready(&plan, now)
            .expect("decided at once")
            .expect("acquire");
        let lease_id = d.grant().expect("granted").lease_id;
        ready(store.release(
            rules,
            &Release {
                caller: None,
                lease_id,
                outcome: Outcome::Success,
                used_permits: None,
            },
            now,
        ))
        .expect("release");
        d.remaining
    }

    #[test]
    fn an_exact_rules_cell_is_found_once_and_never_evicted_while_the_rule_is_in_force() {
        let rules = rules(EXACT_AND_GLOB);
        let store = MemoryStore::new(&rules);
        let (_, how) = rules.resolve_kind("r").unwrap();
        assert!(
            store.homes.load().get(how).is_none(),
            "found on first use, not before"
        );
        assert_eq!(acquire(&store, &rules, "r", 0), 4);
        assert_eq!(acquire(&store, &rules, "g.x", 0), 4);
        let cell = store
            .homes
            .load()
            .get(how)
            .expect("found by the first acquire")
            .clone();
        assert_eq!(acquire(&store, &rules, "r", 0), 3, "the same cell");
        let limit = lock(&cell).value.limit.unwrap();
        assert_eq!(crate::engine::policy::Limiter::remaining(&limit, 0), 3);

        // Both buckets refill; only the glob-matched resource's idle state goes (its cell and its
        // pressure state: a resource under a pattern keeps one).
        assert_eq!(
            ready(store.usage(&rules, &crate::engine::UsageQuery::ALL, 100 * SEC))
                .unwrap()
                .live_keys,
            3
        );
        assert_eq!(ready(store.evict_idle(100 * SEC)).unwrap(), 2);
        assert!(!lock(&cell).evicted);
        assert_eq!(
            ready(store.usage(&rules, &crate::engine::UsageQuery::ALL, 100 * SEC))
                .unwrap()
                .live_keys,
            1
        );
    }

    #[test]
    fn a_handle_outliving_its_rule_finds_its_cell_evicted_and_goes_to_the_table() {
        let old = rules(EXACT_AND_GLOB);
        let store = MemoryStore::new(&old);
        assert_eq!(acquire(&store, &old, "r", 0), 4);
        let (_, old_how) = old.resolve_kind("r").unwrap();
        let cell = store.homes.load().get(old_how).unwrap().clone();

        // A reload drops rule "r": its idle cell may go now.
        let new = rules(&EXACT_AND_GLOB.replace("name = \"r\"", "name = \"s\""));
        store.apply(&new).expect("rules held");
        assert_eq!(ready(store.evict_idle(100 * SEC)).unwrap(), 1);
        assert!(lock(&cell).evicted);

        // A request that resolved the old rule before the reload still gets a right answer: a fresh
        // bucket from the table, not the evicted cell.
        assert_eq!(acquire(&store, &old, "r", 100 * SEC), 4);
        assert_eq!(
            ready(store.usage(&old, &crate::engine::UsageQuery::ALL, 100 * SEC))
                .unwrap()
                .live_keys,
            1,
            "the table holds r again"
        );
        assert!(
            store.homes.load().get(old_how).is_none(),
            "the old rule set's handles are not consulted"
        );
    }

    /// Acquires on one thread while another reloads the rule away and back and evicts idle state: every rule
    /// version's handle must reach the one bucket, so exactly its burst is granted (the clock stands still).
    #[test]
    fn reloads_racing_acquires_never_grant_past_the_burst() {
        use crate::{
            clock::FakeClock,
            engine::{EngineError, Quota},
        };
        const BURST: &str = r#"
[[resources]]
name = "r"
rate = { limit = 1, period = "1h", burst = 2000 }
"#;
        let quota = Quota::in_memory(rules(BURST), Arc::new(FakeClock::new()));
        let req = Acquire {
            resource: "r".into(),
            permits: 1,
            ..Default::default()
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        let (granted, reloads) = std::thread::scope(|s| {
            let acquirer = s.spawn(|| {
                let (mut granted, mut denied) = (0u64, 0u64);
                while denied < 5_000 {
                    match quota.acquire_ready(&req).expect("decided at once") {
                        Ok(d) if d.granted() => granted += 1,
                        Ok(_) => denied += 1,
                        Err(EngineError::UnknownResource(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                granted
            });
            let mut reloads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let toml = if reloads.is_multiple_of(2) {
                    BURST.replace("name = \"r\"", "name = \"s\"")
                } else {
                    BURST.to_owned()
                };
                quota.replace_rules(rules(&toml)).expect("rules held");
                ready(quota.evict_idle()).unwrap();
                reloads += 1;
            }
            (acquirer.join().unwrap(), reloads)
        });
        assert_eq!(granted, 2000, "after {reloads} reloads");
        assert!(reloads > 0);
    }

    /// The engine tells its store the rules it enforces, whatever rules the store was built with.
    #[test]
    fn an_engine_keeps_the_cells_of_its_own_rules() {
        use crate::{clock::FakeClock, engine::Quota};
        let clock = Arc::new(FakeClock::new());
        let store = MemoryStore::new(&rules("[[resources]]\nname = \"other\"\nconcurrency = 1\n"));
        let quota = Quota::new(rules(EXACT_AND_GLOB), store, clock.clone()).expect("rules held");
        let req = Acquire {
            resource: "r".into(),
            permits: 1,
            ..Default::default()
        };
        let d = quota.acquire_ready(&req).unwrap().unwrap();
        ready(quota.release(&Release {
            caller: None,
            lease_id: d.grant().unwrap().lease_id,
            outcome: Outcome::Success,
            used_permits: None,
        }))
        .unwrap();
        clock.advance(std::time::Duration::from_secs(100));
        assert_eq!(ready(quota.evict_idle()).unwrap(), 0, "r's cell is kept");
        assert_eq!(ready(quota.usage()).unwrap().live_keys, 1);
    }

    #[test]
    fn a_reloaded_rule_finds_the_same_state() {
        let first = rules(EXACT_AND_GLOB);
        let store = MemoryStore::new(&first);
        assert_eq!(acquire(&store, &first, "r", 0), 4);
        let first_cell = store
            .homes
            .load()
            .get(first.resolve_kind("r").unwrap().1)
            .unwrap()
            .clone();
        let second = rules(EXACT_AND_GLOB);
        store.apply(&second).expect("rules held");
        assert_eq!(acquire(&store, &second, "r", 0), 3, "tokens kept");
        let (_, how) = second.resolve_kind("r").unwrap();
        assert!(Arc::ptr_eq(
            store.homes.load().get(how).unwrap(),
            &first_cell
        ));
    }
}
