//! Lease identifiers: 64 bits, unique per server process, unguessable enough that a client cannot release
//! another's lease by counting, and printed as 16 hex digits on the wire.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

/// A lease's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl LeaseId {
    /// The 16 lower-case hex digits of the wire form, without the formatting machinery (this runs once per
    /// grant).
    pub fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }

    /// The wire form as a `String`.
    pub fn to_hex_string(self) -> String {
        // Hex digits are ASCII, so always UTF-8; one allocation of the exact size (collecting chars cost
        // about 300 instructions per Acquire, callgrind).
        let hex = self.hex();
        std::str::from_utf8(&hex).map_or_else(|_| String::new(), str::to_owned)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII, so always UTF-8.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for LeaseId {
    type Err = ();

    /// Only the canonical form the server issues: exactly 16 lower-case hex digits (no sign, no upper case),
    /// so one lease has one spelling and ids compare as strings everywhere (logs, admin tools, clients).
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(LeaseId).map_err(|_| ())
    }
}

/// Issues lease ids: a per-process random offset plus a grant counter and a slot, scrambled by a bijection
/// (splitmix64), so ids never repeat within a process and do not reveal how many leases were issued. The
/// slot ([`SLOT_BITS`] bits) is where a store keeps the lease, so it finds a lease from its id without
/// hashing; the counter above it has 40 bits (a trillion grants; past that ids may repeat, which harms
/// nothing once the earlier lease and its 60 s tombstone are long gone).
#[derive(Debug)]
pub struct LeaseIds {
    seed: u64,
    next: AtomicU64,
}

/// Bits of an (unscrambled) id that name the lease's slot in its store.
pub const SLOT_BITS: u32 = 24;

const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const COUNTER_LIMIT: u64 = 1 << (64 - SLOT_BITS);

impl Default for LeaseIds {
    fn default() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x5157_4f54_4144_u64),
            next: AtomicU64::new(1),
        }
    }
}

impl LeaseIds {
    /// The next id (slot 0).
    pub fn issue(&self) -> LeaseId {
        self.issue_in(0)
    }

    /// The next id, carrying `slot` (only its low [`SLOT_BITS`] bits are kept).
    pub fn issue_in(&self, slot: u32) -> LeaseId {
        self.compose(self.next.fetch_add(1, Ordering::Relaxed), slot)
    }

    /// The id of grant number `n` (counted by the caller, e.g. per slot range under its own lock, so that
    /// `(n, slot)` never repeats) in `slot`.
    pub fn compose(&self, n: u64, slot: u32) -> LeaseId {
        let raw = ((n % COUNTER_LIMIT) << SLOT_BITS) | (u64::from(slot) & SLOT_MASK);
        LeaseId(splitmix64(self.seed.wrapping_add(raw)))
    }

    /// The grant number and slot `id` was composed of (for an id this process did not issue: random ones).
    pub fn decompose(&self, id: LeaseId) -> (u64, u32) {
        let raw = self.unscramble(id);
        (raw >> SLOT_BITS, (raw & SLOT_MASK) as u32)
    }

    /// True when grant number `n` is below `next`, the next one to be issued in its counting: the test
    /// behind [`was_issued`](Self::was_issued), for callers that count grants themselves.
    pub fn counted(n: u64, next: u64) -> bool {
        // Once the counter has wrapped, every value has been issued.
        n >= 1 && (n < next || next >= COUNTER_LIMIT)
    }

    fn unscramble(&self, id: LeaseId) -> u64 {
        unsplitmix64(id.0).wrapping_sub(self.seed)
    }

    /// The slot `id` was issued with. For an id this process did not issue, any slot: the store must
    /// check that the lease it finds there has this id.
    pub fn slot(&self, id: LeaseId) -> u32 {
        self.decompose(id).1
    }

    /// True when this process issued `id` (the scrambling is a bijection, so it can be undone). A forged
    /// or foreign id decodes to a random counter value, almost surely far beyond the ones issued.
    pub fn was_issued(&self, id: LeaseId) -> bool {
        Self::counted(self.decompose(id).0, self.next.load(Ordering::Relaxed))
    }
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits each step).
const fn inverse(a: u64) -> u64 {
    let mut x = a;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Undoes `y = x ^ (x >> s)`.
fn unxorshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    for _ in 0..(64 / s) {
        x = y ^ (x >> s);
    }
    x
}

fn unsplitmix64(z: u64) -> u64 {
    let mut x = unxorshift(z, 31);
    x = unxorshift(x.wrapping_mul(inverse(0x94d0_49bb_1331_11eb)), 27);
    x = unxorshift(x.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9)), 30);
    x.wrapping_sub(0x9e37_79b9_7f4a_7c15)
}

/// The splitmix64 finalizer over `x` plus the golden ratio: a bijection that scatters every bit.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn unscrambling_inverts_scrambling(x: u64) {
            prop_assert_eq!(unsplitmix64(splitmix64(x)), x);
        }

        #[test]
        fn hex_is_the_padded_lower_case_form(x: u64) {
            let id = LeaseId(x);
            prop_assert_eq!(id.to_hex_string(), format!("{x:016x}"));
            prop_assert_eq!(id.to_string(), format!("{x:016x}"));
            prop_assert_eq!(id.to_hex_string().parse::<LeaseId>(), Ok(id));
        }
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        let id = LeaseId(0x0123_4567_89ab_cdef);
        assert_eq!("0123456789abcdef".parse::<LeaseId>(), Ok(id));
        for other in [
            "0123456789ABCDEF",
            "0123456789abcdeF",
            "+123456789abcdef",
            "-123456789abcdef",
            " 123456789abcdef",
            "0123456789abcde",
            "0123456789abcdef0",
        ] {
            assert!(other.parse::<LeaseId>().is_err(), "{other:?} parsed");
        }
    }

    #[test]
    fn round_trips_and_never_repeats() {
        let ids = LeaseIds::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.issue();
            assert_eq!(id.to_string().parse::<LeaseId>(), Ok(id));
            assert!(seen.insert(id));
        }
        assert!("xyz".parse::<LeaseId>().is_err());
        for id in &seen {
            assert!(ids.was_issued(*id));
        }
        assert!(!ids.was_issued(LeaseId(42)));
        assert!(
            !LeaseIds::default().was_issued(ids.issue()),
            "another process's id"
        );
        assert!("000000000000000g".parse::<LeaseId>().is_err());
    }

    proptest! {
        #[test]
        fn an_id_carries_its_slot(slots in proptest::collection::vec(0u32..(1 << SLOT_BITS), 1..50)) {
            let ids = LeaseIds::default();
            let mut seen = std::collections::HashSet::new();
            for slot in slots {
                let id = ids.issue_in(slot);
                prop_assert_eq!(ids.slot(id), slot);
                prop_assert!(ids.was_issued(id));
                prop_assert!(seen.insert(id), "ids never repeat, whatever their slots");
            }
        }
    }
}
