//! Watching the client's HTTP/2 frames go by (read side only, headers only), to close a connection that
//! floods control frames. hyper answers every PING and SETTINGS a client sends, and has no limit of its own
//! on how many: a client that sends them as fast as it can (and never reads the answers) costs the server
//! CPU and write buffers for nothing (CVE-2019-9512, 2019-9515). quotad closes the connection once a client
//! sends more than `server.http2.max_control_frames_per_second` PING or SETTINGS frames (acknowledgements
//! aside) within a second.
//!
//! RST_STREAM is not counted here: a client resets a stream whenever a deadline passes or a caller gives up,
//! which is ordinary traffic. What rapid reset (CVE-2023-44487) abuses is streams opened and reset before the
//! server can accept them; hyper bounds those per connection (`server.http2.max_pending_reset_streams`) and
//! closes the connection past the bound (see `serve`).

use tokio::time::{Duration, Instant};

/// The client connection preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: u32 = 24;
const FRAME_HEADER_LEN: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Where the watcher is in the client's byte stream.
#[derive(Debug)]
pub struct FrameWatch {
    /// Bytes of the preface, or of the current frame's payload, still to pass over.
    skip: u32,
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    limit: u32,
    window: Instant,
    seen: u32,
}

/// The client sent control frames faster than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood;

impl FrameWatch {
    /// Watches a connection that may send `limit` PING or SETTINGS frames a second.
    pub fn new(limit: u32, now: Instant) -> Self {
        Self {
            skip: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            limit,
            window: now,
            seen: 0,
        }
    }

    /// Notes `bytes` just read from the client (the clock is read only when a counted frame arrives).
    pub fn observe(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = bytes.len().min(self.skip as usize);
                bytes = bytes.get(n..).unwrap_or_default();
                // n ≤ skip, which is a u32.
                self.skip -= n as u32;
                continue;
            }
            let n = bytes.len().min(FRAME_HEADER_LEN - self.have);
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.have..self.have + n),
                bytes.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let [l0, l1, l2, kind, flags, ..] = self.header;
                self.skip = u32::from_be_bytes([0, l0, l1, l2]);
                if matches!(kind, PING | SETTINGS) && flags & ACK == 0 {
                    self.count(Instant::now())?;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, now: Instant) -> Result<(), Flood> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(1);
        if self.seen > self.limit {
            Err(Flood)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let len = (payload as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.resize(FRAME_HEADER_LEN + payload, 0xab);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn pings_past_the_limit_are_a_flood_wherever_the_reads_split() {
        let now = Instant::now();
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(SETTINGS, 0, 12));
        stream.extend(frame(SETTINGS, ACK, 0));
        stream.extend(frame(0x1, 0x4, 40)); // HEADERS
        for _ in 0..9 {
            stream.extend(frame(PING, 0, 8));
            stream.extend(frame(PING, ACK, 8)); // answers to the server's pings do not count
        }
        for _ in 0..1_000 {
            stream.extend(frame(0x3, 0, 4)); // RST_STREAM: cancelled calls are not control frames here
        }
        for split in [1, 2, 7, 9, 10, 64, stream.len()] {
            let mut w = FrameWatch::new(10, now);
            for chunk in stream.chunks(split) {
                assert_eq!(w.observe(chunk), Ok(()), "split {split}");
            }
            // The 11th PING or SETTINGS within the second is one too many...
            assert_eq!(w.observe(&frame(PING, 0, 8)), Err(Flood));
            // ...but a second later the count starts again.
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(w.observe(&frame(PING, 0, 8)), Ok(()));
        }
    }

    #[test]
    fn large_payloads_are_passed_over_not_parsed() {
        let now = Instant::now();
        let mut w = FrameWatch::new(1, now);
        w.observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        // A DATA frame whose payload happens to look like PING frames.
        let fake_pings: Vec<u8> = (0..100).flat_map(|_| frame(PING, 0, 8)).collect();
        let mut data = frame(0x0, 0, fake_pings.len());
        data.truncate(FRAME_HEADER_LEN);
        data.extend(&fake_pings);
        assert_eq!(w.observe(&data), Ok(()));
    }
}
