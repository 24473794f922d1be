//! A sliding time window of call outcomes, kept as a ring of fixed slots so it costs a few words and
//! no allocation per call. The window covers the current slot plus the previous `SLOTS - 1`.

use crate::clock::Nanos;

const SLOTS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot period this slot currently holds (`now / slot_len`).
    epoch: u64,
    calls: u32,
    failures: u32,
}

/// Counts of calls and failures over the last `window` of time.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slot_len: u64,
    slots: [Slot; SLOTS],
}

impl SlidingWindow {
    /// A window covering `window_nanos`, split into ten slots.
    pub fn new(window_nanos: u64) -> Self {
        Self {
            slot_len: (window_nanos / SLOTS as u64).max(1),
            slots: [Slot::default(); SLOTS],
        }
    }

    fn slot(&mut self, now: Nanos) -> &mut Slot {
        let epoch = now / self.slot_len;
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                calls: 0,
                failures: 0,
            };
        }
        slot
    }

    /// Counts one call, failed or not.
    pub fn record(&mut self, now: Nanos, failed: bool) {
        let slot = self.slot(now);
        slot.calls = slot.calls.saturating_add(1);
        if failed {
            slot.failures = slot.failures.saturating_add(1);
        }
    }

    /// (calls, failures) in the window ending at `now`.
    pub fn totals(&self, now: Nanos) -> (u64, u64) {
        let current = now / self.slot_len;
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| s.epoch >= oldest && s.epoch <= current && (s.calls > 0))
            .fold((0, 0), |(c, f), s| {
                (c + u64::from(s.calls), f + u64::from(s.failures))
            })
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots = [Slot::default(); SLOTS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_expire_after_the_window() {
        let mut w = SlidingWindow::new(10_000);
        w.record(0, true);
        w.record(5_000, false);
        assert_eq!(w.totals(5_000), (2, 1));
        assert_eq!(w.totals(9_999), (2, 1));
        // Slot 0 (0..1000) leaves the window when slot 10 starts.
        assert_eq!(w.totals(10_000), (1, 0));
        assert_eq!(w.totals(15_000), (0, 0));
    }
}
