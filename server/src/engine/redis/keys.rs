//! Redis key names. Every key of one resource (its levels, breaker, pressure, leases, request ids) carries
//! the hash tag of the resource's shard, so one script touches one Cluster slot; a lease id carries its
//! shard in its top bits, so a release finds the lease's slot from the id alone.
//!
//! Layout: `<prefix>{q<shard>}<kind><parts>`, each part written as `<byte length>:<bytes>`, so no join is
//! ambiguous and any byte round-trips. Kinds: `L` a level (bucket and leases in flight), `B` a breaker,
//! `R` a resource's pressure and lease count, `I` a remembered request_id, `l:` a lease, `x` and `ids` the
//! shard's expiry and id indexes (written by the script from the shard prefix).

use crate::engine::{LeaseId, plan::KEY_SEP};

/// Shards a deployment's keys are spread over. Part of the key layout and of every lease id: changing it
/// strands live state, so it is a constant, not a setting.
pub const SHARDS: u64 = 64;

/// Bits of a lease id below its shard.
const SHARD_SHIFT: u32 = 58;

/// The shard of a resource name (FNV-1a: stable across processes, versions and platforms).
pub fn shard_of(resource: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in resource.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % SHARDS
}

/// The shard of a state key (a level's or a breaker's): its resource's.
pub fn shard_of_key(state_key: &str) -> u64 {
    shard_of(first(state_key))
}

/// The shard a lease id was issued in.
pub fn shard_of_lease(id: LeaseId) -> u64 {
    id.0 >> SHARD_SHIFT
}

/// A lease id in `shard` from 58 random bits, never of the form [`held_nothing_in`] issues (where the
/// random bits would make one, the lowest is flipped).
pub fn lease_in(shard: u64, random: u64) -> LeaseId {
    let id = LeaseId((shard << SHARD_SHIFT) | (random & ((1 << SHARD_SHIFT) - 1)));
    if holds_nothing(id) {
        LeaseId(id.0 ^ 1)
    } else {
        id
    }
}

/// Low bits of a held-nothing lease id: a check of the bits above them.
const CHECK_BITS: u32 = 24;
const CHECK_MASK: u64 = (1 << CHECK_BITS) - 1;

fn check(high: u64) -> u64 {
    crate::engine::lease_id::splitmix64(high ^ 0x6e6f_7468_696e_6721) & CHECK_MASK
}

/// The id of a grant no store keeps (it holds nothing: see `Plan::holds_nothing`), in `shard`, from
/// random bits: its low 24 bits check the rest, so every node of a fleet tells such an id from a stored
/// lease's without asking Redis (no stored lease has one, see [`lease_in`]; a random id has one with
/// chance 2^-24 and is then answered as holding nothing, which changes nothing).
pub fn held_nothing_in(shard: u64, random: u64) -> LeaseId {
    let high = ((shard << SHARD_SHIFT) | (random & ((1 << SHARD_SHIFT) - 1))) >> CHECK_BITS;
    LeaseId((high << CHECK_BITS) | check(high))
}

/// True when `id` has the form [`held_nothing_in`] issues.
pub fn holds_nothing(id: LeaseId) -> bool {
    check(id.0 >> CHECK_BITS) == id.0 & CHECK_MASK
}

/// Key names under one deployment prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

fn part(out: &mut String, p: &str) {
    out.push_str(&p.len().to_string());
    out.push(':');
    out.push_str(p);
}

impl Keys {
    /// Keys under `prefix` (validated by the config: no braces, no control characters).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix of every key of `shard`, hash tag included (the script builds lease and index names on it).
    pub fn shard(&self, shard: u64) -> String {
        format!("{}{{q{shard}}}", self.prefix)
    }

    fn key(&self, shard: u64, kind: char, parts: &str) -> String {
        let mut out = self.shard(shard);
        out.push(kind);
        for p in parts.split(KEY_SEP) {
            part(&mut out, p);
        }
        out
    }

    /// A level's key, from its engine state key (`resource` or `resource␟descriptor␟value`).
    pub fn level(&self, state_key: &str) -> String {
        self.key(shard_of(first(state_key)), 'L', state_key)
    }

    /// A breaker's key, from its engine key.
    pub fn breaker(&self, breaker_key: &str) -> String {
        self.key(shard_of(first(breaker_key)), 'B', breaker_key)
    }

    /// The engine key of the breaker whose Redis key is `key` ([`Keys::breaker`] read back); `None` for
    /// anything else.
    pub fn breaker_of(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix("{q")?;
        let (shard, mut rest) = rest.split_once('}')?;
        if shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = rest.strip_prefix('B')?;
        let mut out = String::with_capacity(rest.len());
        let mut first = true;
        while !rest.is_empty() {
            let (len, tail) = rest.split_once(':')?;
            let len: usize = len.parse().ok()?;
            if !std::mem::take(&mut first) {
                out.push(KEY_SEP);
            }
            out.push_str(tail.get(..len)?);
            rest = tail.get(len..)?;
        }
        Some(out)
    }

    /// A resource's pressure and lease count.
    pub fn resource(&self, resource: &str) -> String {
        self.key(shard_of(resource), 'R', resource)
    }

    /// A remembered request_id of `resource`.
    pub fn request_id(&self, resource: &str, request_id: &str) -> String {
        let mut out = self.key(shard_of(resource), 'I', resource);
        part(&mut out, request_id);
        out
    }

    /// A lease.
    pub fn lease(&self, id: LeaseId) -> String {
        format!("{}l:{id}", self.shard(shard_of_lease(id)))
    }

    /// A shard's expiry index.
    pub fn expiries(&self, shard: u64) -> String {
        format!("{}x", self.shard(shard))
    }

    /// A shard's id index.
    pub fn ids(&self, shard: u64) -> String {
        format!("{}ids", self.shard(shard))
    }

    /// The resources used on Unix day `day`, by name (no hash tag: written apart from the scripts). One key
    /// per day, each kept two days, so a flood of names cannot grow the index for ever.
    pub fn index(&self, day: u64) -> String {
        format!("{}resources:{day}", self.prefix)
    }

    /// The live nodes' heartbeats.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

/// The part of a state key that picks its shard: the resource name (a gateway counter's shard tag, which is
/// a resource name or a domain, without its mark: a counter of a routed domain shares its resource's shard).
fn first(key: &str) -> &str {
    let first = key.split(KEY_SEP).next().unwrap_or(key);
    first.strip_prefix('\u{1d}').unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_be_confused() {
        let k = Keys::new("q:");
        let a = k.level(&crate::engine::plan::partition_key("a", "b:1", "c"));
        let b = k.level(&crate::engine::plan::partition_key("a", "b", "1:c"));
        assert_ne!(a, b);
        assert!(a.starts_with(&k.shard(shard_of("a"))));
        // One resource's keys share one hash tag.
        assert!(k.breaker("a").starts_with(&k.shard(shard_of("a"))));
        assert!(
            k.request_id("a", "x}{")
                .starts_with(&k.shard(shard_of("a")))
        );
    }

    #[test]
    fn a_breaker_key_reads_back() {
        let k = Keys::new("q:");
        let partitioned = crate::engine::plan::partition_key("a:1}{", "tenant", "é:2:\u{1f}");
        for engine_key in ["a", "down", partitioned.as_str(), "\u{1f}x\u{1f}"] {
            assert_eq!(
                k.breaker_of(&k.breaker(engine_key)).as_deref(),
                Some(engine_key)
            );
        }
        assert_eq!(
            k.breaker_of(&k.level("a")),
            None,
            "a level's key is not a breaker's"
        );
        assert_eq!(Keys::new("other:").breaker_of(&k.breaker("a")), None);
        for bad in [
            "q:{q1}B9:a",
            "q:{q}B1:a",
            "q:{qx}B1:a",
            "q:{q1}B1a",
            "q:{q1}Bx:a",
        ] {
            assert_eq!(k.breaker_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_lease_id_names_its_shard() {
        for shard in 0..SHARDS {
            let id = lease_in(shard, u64::MAX);
            assert_eq!(shard_of_lease(id), shard);
            assert!(k_lease(id).starts_with(&Keys::new("p").shard(shard)));
        }
    }

    #[test]
    fn a_held_nothing_id_is_told_from_a_stored_leases() {
        let mut told = 0;
        for i in 0..200_000u64 {
            let random = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let shard = i % SHARDS;
            let stored = lease_in(shard, random);
            assert!(!holds_nothing(stored));
            assert_eq!(shard_of_lease(stored), shard);
            let none = held_nothing_in(shard, random);
            assert!(holds_nothing(none));
            assert_eq!(shard_of_lease(none), shard);
            told += usize::from(holds_nothing(LeaseId(random)));
        }
        assert!(told <= 2, "{told} random ids looked held-nothing");
    }

    fn k_lease(id: LeaseId) -> String {
        Keys::new("p").lease(id)
    }
}
