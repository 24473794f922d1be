//! Why connections are closed, and which addresses are refused at accept. A connection closed for abuse (a
//! PING or SETTINGS flood, or more streams reset before they were accepted than hyper allows: rapid reset)
//! is a strike against its address; an address with [`STRIKES`] strikes within [`STRIKE_WINDOW`] is refused
//! at accept for one second, doubling with each repeat up to a minute. One abusive connection never gets
//! an address refused: many clients often share one (a host, a pod behind a sidecar, a NAT gateway, a proxy),
//! and refusing them all for one client's misdeed would be a bigger outage than the abuse. Without any
//! refusal, a flooding client that reconnects at once would keep the server setting up and tearing down
//! connections (with TLS, a handshake each).
//!
//! Every close and every refusal is counted by reason (`quotad_connections_closed_total`,
//! `quotad_connections_refused_total`); an abusive close and the start of a refusal are logged once each. The
//! table is bounded; a full table forgets the entries whose time has passed first, and takes no new
//! address past its size (a flood of addresses then only costs what closing their connections costs).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::time::{Duration, Instant};

/// Strikes within [`STRIKE_WINDOW`] that get an address refused.
pub const STRIKES: u32 = 3;
/// How long strikes are remembered.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(60);
/// Most addresses remembered at once.
const MAX_ENTRIES: usize = 10_000;

/// Why the server closed a connection, as `quotad_connections_closed_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// More PING or SETTINGS frames a second than `server.http2.max_control_frames_per_second`.
    ControlFlood,
    /// More streams reset before the server accepted them than `server.http2.max_pending_reset_streams`
    /// (rapid reset, CVE-2023-44487), or more streams the server had to reset for errors.
    ResetFlood,
    /// Nothing at all received within `server.http2.preface_timeout` of connecting. Not a strike: a
    /// client that died right after connecting looks the same.
    Silent,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 3] = [Self::ControlFlood, Self::ResetFlood, Self::Silent];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ControlFlood => "control_flood",
            Self::ResetFlood => "reset_flood",
            Self::Silent => "silent",
        }
    }

    fn abusive(self) -> bool {
        !matches!(self, Self::Silent)
    }
}

/// The strikes and refusals of every address, and the counts the metrics show. One per server, shared by
/// its listeners.
#[derive(Debug, Default)]
pub struct Penalties {
    map: Mutex<HashMap<IpAddr, Entry>>,
    closed: [AtomicU64; 3],
    refused: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the strikes being counted began.
    since: Instant,
    strikes: u32,
    /// Refused until then (in the past when not refused).
    until: Instant,
    /// Refusals so far, for the doubling; forgotten a minute after the last one ends.
    refusals: u32,
}

impl Penalties {
    /// Counts a connection from `ip` closed for `reason`; an abusive one is a strike, and the last of
    /// [`STRIKES`] within [`STRIKE_WINDOW`] starts a refusal.
    pub fn closed(&self, ip: IpAddr, reason: CloseReason, now: Instant) {
        if let Some(c) = self.closed.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if !reason.abusive() {
            tracing::debug!(%ip, reason = reason.label(), "closed a connection");
            return;
        }
        tracing::info!(%ip, reason = reason.label(), "closed an abusive connection");
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES && !map.contains_key(&ip) {
            map.retain(|_, e| !e.forgettable(now));
            if map.len() >= MAX_ENTRIES {
                return;
            }
        }
        let entry = map.entry(ip).or_insert(Entry {
            since: now,
            strikes: 0,
            until: now,
            refusals: 0,
        });
        if let Some(penalty) = entry.strike(now) {
            tracing::warn!(%ip, ?penalty, refusals = entry.refusals, "refusing an address's connections: {STRIKES} abusive connections within {STRIKE_WINDOW:?}");
        }
    }

    /// True while `ip` is refused; each refusal is counted.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = map.get(&ip).is_some_and(|e| e.until > now);
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Connections closed so far, by [`CloseReason::ALL`].
    pub fn closed_counts(&self) -> [u64; 3] {
        self.closed.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Connections refused at accept so far.
    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Entry {
    /// One more strike; the refusal it starts, if it is the last of [`STRIKES`].
    fn strike(&mut self, now: Instant) -> Option<Duration> {
        if now.saturating_duration_since(self.since) >= STRIKE_WINDOW {
            self.since = now;
            self.strikes = 0;
        }
        if now.saturating_duration_since(self.until) >= LONGEST {
            self.refusals = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes < STRIKES {
            return None;
        }
        self.strikes = 0;
        self.since = now;
        let doublings = self.refusals.min(6);
        self.refusals = self.refusals.saturating_add(1);
        let penalty = FIRST.saturating_mul(1 << doublings).min(LONGEST);
        self.until = now + penalty;
        Some(penalty)
    }

    /// Nothing about this address matters any more: no strikes in the window, no refusal to remember.
    fn forgettable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= STRIKE_WINDOW
            && now.saturating_duration_since(self.until) >= LONGEST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strikes(p: &Penalties, ip: IpAddr, n: u32, now: Instant) {
        for _ in 0..n {
            p.closed(ip, CloseReason::ControlFlood, now);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_abusive_connection_gets_nobody_refused() {
        let p = Penalties::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let now = Instant::now();
        strikes(&p, ip, STRIKES - 1, now);
        assert!(!p.refused(ip, now));
        // Strikes further apart than the window never add up.
        for i in 1..10 {
            strikes(&p, ip, STRIKES - 1, now + STRIKE_WINDOW * i);
            assert!(!p.refused(ip, now + STRIKE_WINDOW * i));
        }
        // Silent connections are counted, never struck.
        for _ in 0..100 {
            p.closed(ip, CloseReason::Silent, now);
        }
        assert!(!p.refused(ip, now));
        assert_eq!(
            p.closed_counts(),
            [(STRIKES - 1) * 10, 0, 100].map(u64::from)
        );
        assert_eq!(p.refused_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_abusers_are_refused_longer_up_to_a_minute() {
        let p = Penalties::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let now = Instant::now();
        strikes(&p, ip, STRIKES, now);
        assert!(p.refused(ip, now + Duration::from_millis(999)));
        assert!(!p.refused(ip, now + FIRST));
        assert!(!p.refused(other, now));
        assert_eq!(p.refused_count(), 1);
        let again = now + FIRST;
        strikes(&p, ip, STRIKES, again);
        assert!(p.refused(ip, again + Duration::from_millis(1999)));
        assert!(!p.refused(ip, again + FIRST * 2));
        for _ in 0..20 {
            strikes(&p, ip, STRIKES, again);
        }
        assert!(p.refused(ip, again + LONGEST - Duration::from_millis(1)));
        assert!(!p.refused(ip, again + LONGEST));
        // A minute after the last refusal ends, the doubling starts over.
        let much_later = again + LONGEST * 3;
        strikes(&p, ip, STRIKES, much_later);
        assert!(!p.refused(ip, much_later + FIRST));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let p = Penalties::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            strikes(&p, IpAddr::from(i.to_be_bytes()), STRIKES, now);
        }
        assert_eq!(p.map.lock().unwrap().len(), MAX_ENTRIES);
        // Once their time (and a minute) has passed, old entries make room.
        let later = now + LONGEST * 3;
        strikes(&p, "192.168.1.1".parse().unwrap(), STRIKES, later);
        assert!(p.refused("192.168.1.1".parse().unwrap(), later));
        assert_eq!(p.map.lock().unwrap().len(), 1);
    }
}
