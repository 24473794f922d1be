//! The protocol between this side and the Redis store's script (`lua/`), by name: each step's keys, arguments and reply fields,
//! declared once here. The Rust side sets arguments by name ([`Call::set`](super::Call::set)) and reads
//! replies by name ([`Reply`]); the script receives the same names as Lua tables ([`lua`], injected where it
//! says `__QUOTAD_PROTOCOL__`): `KEY.acq.lease` and `ARG.acq.permits` are 1-based indexes into `KEYS` and
//! `ARGV`, `OUT.acq` lists the reply's fields in order (the script's `out` packs a table by those names), and
//! `LEN.acq` counts the named keys and arguments (where a list follows them).
//! A field added to a step is added here, and both sides see it.

use ::redis::Value;

use super::reply::{self, float, instant, int, text, uint};
use crate::{clock::Nanos, engine::EngineError};

/// The names of one list of fields (a step's keys, arguments or reply), in order.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The step (`ARGV[1]`) these fields belong to; the Lua table's key.
    pub step: &'static str,
    /// The field names, in order.
    pub names: &'static [&'static str],
}

/// Declares a list of fields: a module with a constant per field (its 0-based position) and [`Fields`].
macro_rules! fields {
    ($(#[$doc:meta])* $module:ident = $step:literal: $($field:ident),+ $(,)?) => {
        $(#[$doc])*
        #[allow(non_upper_case_globals, dead_code, missing_docs)]
        pub mod $module {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
            #[repr(usize)]
            enum At { $($field),+ }
            $(pub const $field: usize = At::$field as usize;)+
            /// The names, in order.
            pub const FIELDS: super::Fields = super::Fields {
                step: $step,
                names: &[$(stringify!($field)),+],
            };
        }
    };
}

/// Each step's `ARGV`: every step starts with its name, the time (`''`: Redis's own) and the shard's key
/// prefix.
pub mod arg {
    use super::Fields;

    /// The time, at the same place in every step's arguments.
    pub const NOW: usize = acq::now;
    /// The shard's key prefix, at the same place in every step's arguments.
    pub const PREFIX: usize = acq::prefix;

    fields!(
        /// Acquire; then [`level`] for each of `levels`.
        acq = "acq": step, now, prefix, permits, ttl, lease, resource, rule, default_ttl, max_ttl,
        client_id, owner, fingerprint, window, adaptive, breaker, concurrency_retry_after, held, bypass,
        final_grant, levels
    );
    fields!(
        /// One level of an acquire, after [`acq`]'s fields.
        level = "level": partition, rate, max_in_flight, max_debt, shadow, reserve_tokens, reserve_slots
    );
    fields!(rel = "rel": step, now, prefix, lease, outcome, used, caller);
    fields!(ren = "ren": step, now, prefix, lease, ttl, caller);
    fields!(
        rep = "rep": step, now, prefix, kind, pause, lease, caller, resource, adaptive, breaker, quiet
    );
    fields!(cir = "cir": step, now, prefix, breaker, adaptive);
    fields!(rst = "rst": step, now, prefix, breaker);
    fields!(frc = "frc": step, now, prefix, breaker, duration);
    fields!(rvk = "rvk": step, now, prefix, lease);
    fields!(refill = "ref": step, now, prefix);
    fields!(
        /// Sweep; then each shard's prefix.
        swp = "swp": step, now, prefix, limit
    );
    fields!(
        /// Levels as they are stored (nothing written): their count.
        lvl = "lvl": step, now, prefix, adaptive, levels
    );
    fields!(usage = "use": step, now, prefix, rate, adaptive);
    fields!(lst = "lst": step, now, prefix, after, limit);
    fields!(
        /// A gateway's hits; then [`counter`] for each of `counters`.
        hit = "hit": step, now, prefix, counters
    );
    fields!(
        /// One counter of a hit, after [`hit`]'s fields: `cell`, the 1-based index of its key in `KEYS`
        /// (counters on one key share it); `mode` `enforced`, `quota` or `shadow`; `negative` `1` gives
        /// `permits` back.
        counter = "counter": cell, rate, permits, mode, negative
    );

    fields!(
        /// An acquire that holds nothing (`Plan::holds_nothing`: rate levels only, nothing stored but
        /// them and, with a request_id, its replay record); then each level's rate (`args::rate`).
        /// `replay`: '' without a request_id, else `fingerprint|lease|ttl|window` (the request's
        /// fingerprint, and the lease id, TTL and window a grant is remembered with; one argument, so a
        /// request without an id pays for none of them).
        rate = "rate": step, now, prefix, permits, replay, levels
    );
    fields!(
        /// A node's slice (`local_share`, `engine/redis/share.rs`): gives back `give` permits of a slice
        /// taken at `given_at` (ms since the epoch; '' with nothing to give), then decides `permits` as
        /// [`rate`] does and, when they are granted, takes up to `want` more; then each level's rate.
        take = "take": step, now, prefix, permits, want, give, given_at, levels
    );

    /// Every list, for the script's `ARG` table.
    pub const ALL: [Fields; 18] = [
        acq::FIELDS,
        rate::FIELDS,
        take::FIELDS,
        level::FIELDS,
        rel::FIELDS,
        ren::FIELDS,
        rep::FIELDS,
        cir::FIELDS,
        rst::FIELDS,
        frc::FIELDS,
        rvk::FIELDS,
        refill::FIELDS,
        swp::FIELDS,
        lvl::FIELDS,
        usage::FIELDS,
        lst::FIELDS,
        hit::FIELDS,
        counter::FIELDS,
    ];
}

/// Each step's `KEYS` (steps over a variable list of keys name only the fixed ones).
pub mod key {
    use super::Fields;

    fields!(
        /// Acquire; then each level's key.
        acq = "acq": resource, breaker, lease, request_id
    );
    fields!(rel = "rel": lease);
    fields!(ren = "ren": lease);
    fields!(rep = "rep": resource, breaker, lease);
    fields!(cir = "cir": resource, breaker);
    fields!(rst = "rst": resource, breaker);
    fields!(frc = "frc": breaker);
    fields!(rvk = "rvk": lease);
    fields!(
        /// Levels as they stand; then each level's key.
        lvl = "lvl": resource
    );
    fields!(usage = "use": resource, level, breaker);
    fields!(
        /// An acquire that holds nothing; then each level's key, then the request_id's record when it has
        /// one (a request without pays for no key).
        rate = "rate": resource
    );
    fields!(
        /// A node's slice; then each level's key.
        take = "take": resource
    );

    /// Every list, for the script's `KEY` table.
    pub const ALL: [Fields; 12] = [
        acq::FIELDS,
        rate::FIELDS,
        take::FIELDS,
        rel::FIELDS,
        ren::FIELDS,
        rep::FIELDS,
        cir::FIELDS,
        rst::FIELDS,
        frc::FIELDS,
        rvk::FIELDS,
        lvl::FIELDS,
        usage::FIELDS,
    ];
}

/// Each step's reply (an array, fields in this order; a field a reply has no value for is `''`).
pub mod out {
    use super::Fields;

    fields!(
        /// `status`: 1 granted, 0 denied, -1 refused (`reason`: `conflict`, a request_id reused with other
        /// parameters; `collide`, the lease id is taken: retry with another). `shadow`: on a grant, the
        /// index of the first shadow level that would have denied. `reserve`: on a denial, 1 when only
        /// the capacity reserved for higher priority classes denied. `bypassed`: a bypassed grant.
        acq = "acq": status, reason, lease, expires, retry_after, level, remaining, limit, reset_after,
        in_flight, max_in_flight, replayed, ttl, transitions, shadow, reserve, bypassed
    );
    fields!(
        /// `status`: 1 released, 0 not (`reason`: already_released, expired, unknown_lease), -1 refused
        /// (`reason`: not_owner).
        rel = "rel": status, reason, refunded, charged, state, resource, rule, transitions, breaker
    );
    fields!(
        /// `status`: 1 renewed, 0 not (`reason`), -1 refused (`reason`: not_owner).
        ren = "ren": status, reason, expires, ttl
    );
    fields!(
        /// `status`: 1 counted, -1 refused (`reason`: not_owner, other_resource).
        rep = "rep": status, reason, decreased, paused_before, paused_until, factor, state, transitions
    );
    fields!(
        cir = "cir": state, since, calls, failures, consecutive, half_open_at, probes, needed, factor,
        paused_until
    );
    fields!(usage = "use": tokens, in_flight, leases, state, factor, paused_until);
    fields!(
        /// Levels as they are stored: the factor on the rule's rates, then a [`level`] row per level.
        lvl = "lvl": factor
    );
    fields!(
        /// One level as stored: its leases in flight and its limit (`algorithm` `''` without one): a token
        /// bucket's deficit at `now` in nanoseconds, interval and burst, or a window's start (ms since the
        /// epoch), count, previous window's count and period (ns).
        level = "level": deficit, interval, burst, in_flight, algorithm, window_start, count, previous,
        period
    );
    fields!(
        /// One lease of a listing (the reply is a list of these).
        lst = "lst": lease, resource, rule, permits, expires, client_id, owner, probe, descriptors
    );

    fields!(
        /// A gateway's hits: `over` 1 when the request is over the limit; then a [`counter`] row per counter.
        hit = "hit": over
    );
    fields!(
        /// One counter after a hit: `over` 1 when it was over its limit, what remains, its limit, and the
        /// time until its window ends (ns).
        counter = "counter": over, remaining, limit, reset_after
    );

    fields!(
        /// An acquire that holds nothing: `status` 1 granted, 0 denied (`reason`, `retry_after`, and the
        /// `level` that denied, -1 the pause), -1 refused (`reason` `conflict`: a request_id reused with other
        /// parameters); the tightest rate level's figures, plain numbers. A replay of a request_id's grant
        /// adds its `lease`, `expires`, `ttl` and `held` (1: the lease it replays was stored); a fresh grant
        /// ends at `reset_after`.
        rate = "rate": status, reason, retry_after, level, remaining, limit, reset_after, lease, expires, ttl,
        held
    );
    fields!(
        /// A node's slice: `status` 1 granted (`taken` permits, the request's and the slice's, at `at`, ms
        /// since the epoch), 0 denied (`reason`, `retry_after`, the `level` that denied, -1 the pause, and
        /// `refill_after`, the wait until the slice asked for could be taken whole); the tightest level's
        /// figures after it, plain numbers.
        take = "take": status, reason, retry_after, level, remaining, limit, reset_after, taken, at,
        refill_after
    );

    /// Every list, for the script's `OUT` table.
    pub const ALL: [Fields; 13] = [
        acq::FIELDS,
        rate::FIELDS,
        take::FIELDS,
        rel::FIELDS,
        ren::FIELDS,
        rep::FIELDS,
        cir::FIELDS,
        usage::FIELDS,
        lvl::FIELDS,
        level::FIELDS,
        lst::FIELDS,
        hit::FIELDS,
        counter::FIELDS,
    ];
}

/// How state is kept in Redis: each hash's fields, by the name the script uses for it and the one- or
/// two-letter name earlier versions stored. The script reads a hash written either way; it writes the
/// names [`Layout`] says.
pub mod stored {
    /// A level: its leases in flight, and its limit (a token bucket's TAT, interval and burst, or a
    /// window's algorithm, start in ms since the epoch, count, previous window's count, period and the
    /// limit in force); `kept`, when the step of an acquire that holds nothing last pushed its TTL, how
    /// far (ms since the epoch).
    pub const LEVEL: &[(&str, &str)] = &[
        ("tat", "t"),
        ("interval", "i"),
        ("burst", "b"),
        ("in_flight", "f"),
        ("algorithm", "al"),
        ("window_start", "ws"),
        ("count", "cn"),
        ("previous", "pv"),
        ("period", "pd"),
        ("limit", "lm"),
        ("kept", "kp"),
    ];
    /// A breaker (`window`: `epoch:calls:failures` per slot, `;`-separated).
    pub const BREAKER: &[(&str, &str)] = &[
        ("phase", "ph"),
        ("since", "s"),
        ("open_until", "u"),
        ("probes_left", "pl"),
        ("successes", "sc"),
        ("consecutive", "c"),
        ("reopens", "r"),
        ("epoch", "e"),
        ("window_len", "wl"),
        ("window", "w"),
    ];
    /// A resource's pressure: adaptive factor, its last decrease and step, the pause, live leases, the
    /// reporters' quiet window (and a `reporter:<identity>` field per recent reporter).
    pub const PRESSURE: &[(&str, &str)] = &[
        ("factor", "fa"),
        ("last_decrease", "ld"),
        ("last_step", "ls"),
        ("paused_until", "pu"),
        ("leases", "n"),
        ("quiet", "qw"),
        ("kept", "kp"),
    ];
    /// The prefix of a reporter's field in a pressure hash (readable, then earlier).
    pub const REPORTER: (&str, &str) = ("reporter:", "q:");
    /// A lease.
    pub const LEASE: &[(&str, &str)] = &[
        ("resource", "res"),
        ("rule", "rule"),
        ("default_ttl", "dt"),
        ("max_ttl", "mt"),
        ("client_id", "cid"),
        ("owner", "own"),
        ("permits", "p"),
        ("expires", "x"),
        ("levels", "lv"),
        ("pressure", "rk"),
        ("adaptive", "ad"),
        ("descriptors", "ds"),
        ("breaker", "bk"),
        ("breaker_spec", "bs"),
        ("probe", "pr"),
        ("failure_reported", "fr"),
        ("ended", "g"),
        ("granted", "gr"),
        ("final", "fi"),
    ];
    /// Every hash, as the script names its table of written names.
    pub const ALL: [(&str, &[(&str, &str)]); 4] = [
        ("LEVEL_", LEVEL),
        ("BREAKER_", BREAKER),
        ("PRESSURE_", PRESSURE),
        ("LEASE_", LEASE),
    ];
}

/// Which field names the script writes. It reads both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// The readable names ([`stored`]'s first column).
    #[default]
    Readable,
    /// The one- or two-letter names of earlier versions: for a rolling upgrade from one, while any of
    /// its nodes shares the Redis (they read only these).
    Compact,
}

/// The Lua tables of stored field names: per hash, `<HASH>_F[name]` is the name written and `<HASH>_O[name]`
/// the other layout's; `READ[stored]` is the name the script uses, for either layout's stored name;
/// `WRITTEN[stored]` marks the written names (they win over the other layout's on a read);
/// `REPORTER_W` and `REPORTER_O` are the reporter field prefixes written and of the other layout.
fn stored_lua(layout: Layout) -> String {
    let mut lua = String::new();
    let (mut read, mut written) = (Vec::new(), Vec::new());
    for (table, fields) in stored::ALL {
        let pick = |readable: bool| -> Vec<(&str, &str)> {
            fields
                .iter()
                .map(|&(name, old)| (name, if readable { name } else { old }))
                .collect()
        };
        let this = pick(layout == Layout::Readable);
        let other = pick(layout != Layout::Readable);
        for (suffix, names) in [("F", &this), ("O", &other)] {
            let list: Vec<String> = names.iter().map(|(n, w)| format!("{n} = '{w}'")).collect();
            lua.push_str(&format!(
                "local {table}{suffix} = {{ {} }}\n",
                list.join(", ")
            ));
        }
        for (name, old) in fields {
            read.push(format!("['{name}'] = '{name}'"));
            read.push(format!("['{old}'] = '{name}'"));
        }
        written.extend(this.iter().map(|(_, w)| format!("['{w}'] = true")));
    }
    let (new, old) = stored::REPORTER;
    let (w, o) = if layout == Layout::Readable {
        (new, old)
    } else {
        (old, new)
    };
    lua.push_str(&format!("local READ = {{ {} }}\n", read.join(", ")));
    lua.push_str(&format!("local WRITTEN = {{ {} }}\n", written.join(", ")));
    lua.push_str(&format!("local REPORTER_W, REPORTER_O = '{w}', '{o}'\n"));
    lua
}

/// The Lua tables `KEY`, `ARG` (name → 1-based index, per step) and `OUT` (the names in order, per step).
pub fn lua(layout: Layout) -> String {
    let index = |all: &[Fields]| {
        all.iter()
            .map(|f| {
                let fields: Vec<String> = f
                    .names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("{n} = {}", i + 1))
                    .collect();
                format!("  [{:?}] = {{ {} }},\n", f.step, fields.join(", "))
            })
            .collect::<String>()
    };
    let names: String = out::ALL
        .iter()
        .map(|f| {
            let names: Vec<String> = f.names.iter().map(|n| format!("{n:?}")).collect();
            format!("  [{:?}] = {{ {} }},\n", f.step, names.join(", "))
        })
        .collect();
    let count = |step: &str, all: &[Fields]| {
        all.iter()
            .find(|f| f.step == step)
            .map_or(0, |f| f.names.len())
    };
    let lens: String = arg::ALL
        .iter()
        .map(|f| {
            let keys = count(f.step, &key::ALL);
            format!("  [{:?}] = {{ {keys}, {} }},\n", f.step, f.names.len())
        })
        .collect();
    format!(
        "local KEY = {{\n{}}}\nlocal ARG = {{\n{}}}\nlocal OUT = {{\n{names}}}\nlocal LEN = {{\n{lens}}}\n{}",
        index(&key::ALL),
        index(&arg::ALL),
        stored_lua(layout)
    )
}

/// A step's reply, read by field.
#[derive(Debug)]
pub struct Reply(Vec<Value>);

impl Reply {
    /// An array reply.
    pub fn new(v: Value) -> Result<Self, EngineError> {
        reply::items(v).map(Self)
    }

    /// A reply already split into its elements (one row of a listing).
    pub fn row(v: &Value) -> Result<Self, EngineError> {
        Self::new(v.clone())
    }

    /// The field as text.
    pub fn text(&self, field: usize) -> Result<String, EngineError> {
        text(self.0.get(field))
    }

    /// The field as an integer.
    pub fn int(&self, field: usize) -> Result<i64, EngineError> {
        int(self.0.get(field))
    }

    /// The field as a non-negative integer.
    pub fn uint(&self, field: usize) -> Result<u64, EngineError> {
        uint(self.0.get(field))
    }

    /// The field as a count that fits 32 bits (saturating).
    pub fn count(&self, field: usize) -> Result<u32, EngineError> {
        Ok(u32::try_from(self.uint(field)?).unwrap_or(u32::MAX))
    }

    /// The field as a float.
    pub fn float(&self, field: usize) -> Result<f64, EngineError> {
        float(self.0.get(field))
    }

    /// The field as an absolute instant (`None` when empty).
    pub fn instant(&self, field: usize) -> Result<Option<Nanos>, EngineError> {
        instant(self.0.get(field))
    }

    /// The raw field.
    pub fn get(&self, field: usize) -> Option<&Value> {
        self.0.get(field)
    }

    /// The elements (a listing's rows).
    pub fn into_items(self) -> Vec<Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_numbered_in_order() {
        assert_eq!(
            (arg::acq::step, arg::acq::permits, arg::acq::levels),
            (0, 3, 20)
        );
        // `rated` in steps.lua builds this reply by position.
        assert_eq!(
            out::rate::FIELDS.names,
            [
                "status",
                "reason",
                "retry_after",
                "level",
                "remaining",
                "limit",
                "reset_after",
                "lease",
                "expires",
                "ttl",
                "held"
            ]
        );
        assert_eq!(arg::acq::FIELDS.names[arg::acq::held], "held");
        assert_eq!(out::acq::FIELDS.names.len(), out::acq::bypassed + 1);
    }

    #[test]
    fn every_step_starts_with_its_name_the_time_and_the_prefix() {
        // `level` and `counter` are the per-item lists that follow a step's own fields.
        for f in arg::ALL
            .iter()
            .filter(|f| f.step != "level" && f.step != "counter")
        {
            assert_eq!(
                f.names.get(..3),
                Some(&["step", "now", "prefix"][..]),
                "{}",
                f.step
            );
        }
    }

    #[test]
    fn the_lua_tables_index_from_one() {
        let lua = lua(Layout::Readable);
        assert!(
            lua.contains("[\"acq\"] = { step = 1, now = 2, prefix = 3, permits = 4,"),
            "{lua}"
        );
        assert!(lua.contains("[\"rel\"] = { lease = 1 }"), "{lua}");
        assert!(
            lua.contains("[\"ren\"] = { \"status\", \"reason\", \"expires\", \"ttl\" }"),
            "{lua}"
        );
    }
}
