//! Addresses whose connections were closed for a flood are refused at accept for a while: one second after
//! the first, doubling with each repeat up to a minute. Without this, a flooding client that reconnects at
//! once keeps the server busy setting up and tearing down connections (with TLS, a handshake each). The
//! table is bounded; a full table forgets the entries whose time has passed first, and refuses nothing new
//! past its size (a flood of addresses then only costs what closing their connections costs).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use tokio::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(60);
/// Most addresses remembered at once.
const MAX_ENTRIES: usize = 10_000;

/// The addresses refused at accept, with until when and how often they flooded.
#[derive(Debug, Default)]
pub struct Penalties {
    map: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    strikes: u32,
}

impl Penalties {
    /// Refuses `ip` for a while, longer if it flooded before.
    pub fn penalize(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES && !map.contains_key(&ip) {
            map.retain(|_, e| e.until.checked_add(LONGEST).is_some_and(|t| t > now));
            if map.len() >= MAX_ENTRIES {
                return;
            }
        }
        let entry = map.entry(ip).or_insert(Entry {
            until: now,
            strikes: 0,
        });
        entry.strikes = entry.strikes.saturating_add(1);
        let doublings = entry.strikes.saturating_sub(1).min(6);
        let penalty = FIRST.saturating_mul(1 << doublings).min(LONGEST);
        entry.until = now + penalty;
        tracing::info!(%ip, ?penalty, strikes = entry.strikes, "refusing a flooding client's connections");
    }

    /// True while `ip` is refused.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&ip).is_some_and(|e| e.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeat_floods_are_refused_longer_up_to_a_minute() {
        let p = Penalties::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let now = Instant::now();
        assert!(!p.refused(ip, now));
        p.penalize(ip, now);
        assert!(p.refused(ip, now + Duration::from_millis(999)));
        assert!(!p.refused(ip, now + FIRST));
        assert!(!p.refused(other, now));
        p.penalize(ip, now + FIRST);
        assert!(p.refused(ip, now + FIRST + Duration::from_millis(1999)));
        assert!(!p.refused(ip, now + FIRST * 3));
        for _ in 0..20 {
            p.penalize(ip, now);
        }
        assert!(p.refused(ip, now + LONGEST - Duration::from_millis(1)));
        assert!(!p.refused(ip, now + LONGEST));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let p = Penalties::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            p.penalize(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(p.map.lock().unwrap().len(), MAX_ENTRIES);
        // Once their time (and a minute) has passed, old entries make room.
        let later = now + LONGEST * 3;
        p.penalize("192.168.1.1".parse().unwrap(), later);
        assert!(p.refused("192.168.1.1".parse().unwrap(), later));
        assert_eq!(p.map.lock().unwrap().len(), 1);
    }
}
