//! Capacity leasing (`local_share`): a node takes a slice of its levels' permits from the shared store in
//! one step and grants from it locally. The slice is debited at every level before any of it is granted,
//! so a fleet never admits more than its levels allow; what is left when the slice's time is up is given
//! back. These are the step's two halves; their Lua twins (`slice_take`, `slice_give` in
//! `engine/redis/lua/policy.lua`) run inside the Redis store's `take` step, and how big a slice a node asks
//! for is the node's own business (`engine/redis/share.rs`).

use super::Limiter;
use crate::clock::Nanos;

/// How many permits a slice takes from levels that grant `permits` now: `permits`, and up to `want` more
/// while every level has them (`available`: the least any level has).
#[must_use]
pub fn slice_size(available: u64, permits: u64, want: u64) -> u64 {
    available.min(permits.saturating_add(want)).max(permits)
}

/// Takes a slice of `permits` and up to `want` more from `levels`, each of which grants `permits` now
/// (checked before): every level is debited the same amount, which is returned.
pub fn slice_take<L: Limiter>(levels: &mut [&mut L], now: Nanos, permits: u64, want: u64) -> u64 {
    let available = levels
        .iter()
        .map(|l| l.remaining(now))
        .min()
        .unwrap_or(u64::MAX);
    let taken = slice_size(available, permits, want);
    for level in levels.iter_mut() {
        level.debit(now, taken);
    }
    taken
}

/// Gives back `permits` of a slice taken at `taken_at` to every level (never beyond full; a window takes
/// them back only while the window they were taken from counts).
pub fn slice_give<L: Limiter>(levels: &mut [&mut L], now: Nanos, permits: u64, taken_at: Nanos) {
    for level in levels.iter_mut() {
        level.credit(now, permits, taken_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::Bucket;

    #[test]
    fn a_slice_is_what_was_asked_for_what_every_level_has_and_never_less_than_the_request() {
        assert_eq!(slice_size(100, 3, 10), 13);
        assert_eq!(slice_size(8, 3, 10), 8);
        assert_eq!(
            slice_size(2, 3, 10),
            3,
            "the request was checked: it is taken whole"
        );
        assert_eq!(slice_size(u64::MAX, u64::MAX, 5), u64::MAX);
    }

    #[test]
    fn every_level_gives_the_same_slice_and_takes_it_back() {
        // 10 per second, burst 10; and 1 per 100 ms, burst 4.
        let mut a = Bucket::new(100_000_000, 10);
        let mut b = Bucket::new(100_000_000, 4);
        let taken = slice_take(&mut [&mut a, &mut b], 0, 1, 50);
        assert_eq!(taken, 4, "the tighter level bounds the slice");
        assert_eq!((a.remaining(0), b.remaining(0)), (6, 0));
        slice_give(&mut [&mut a, &mut b], 0, 3, 0);
        assert_eq!((a.remaining(0), b.remaining(0)), (9, 3));
    }
}
