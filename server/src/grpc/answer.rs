//! An Acquire's answer on the wire, encoded straight from the engine's [`Decision`]: the bytes of
//! `quotad.v1.AcquireResponse` without building one. The generated message owns three `String`s (lease id,
//! resource, rule) and is 232 bytes that tonic moves several times per call; this one borrows the
//! decision's names and writes the lease id's 16 hex digits from the stack. [`AcquireAnswer::into_pb`] builds
//! the generated message for in-process callers, and a test holds the two encodings byte for byte equal.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType, encoded_len_varint, key_len},
};
use prost_types::Timestamp;
use quotad_api::v1 as pb;

use super::convert::{decision_out, duration_out, timestamp_out};
use crate::{
    clock::{Clock, Nanos, nanos},
    engine::{Decision, Verdict},
};

/// `quotad.v1.AcquireResponse`'s field numbers (proto/quotad/v1/quota.proto).
mod tag {
    pub const GRANTED: u32 = 1;
    pub const DECISION: u32 = 2;
    pub const LEASE_ID: u32 = 3;
    pub const LEASE_EXPIRES_AT: u32 = 4;
    pub const LEASE_TTL: u32 = 5;
    pub const RETRY_AFTER: u32 = 6;
    pub const REMAINING: u32 = 7;
    pub const LIMIT: u32 = 8;
    pub const RESET_AFTER: u32 = 9;
    pub const DENIED_BY: u32 = 10;
    pub const REPLAYED: u32 = 11;
    pub const RESOURCE: u32 = 12;
    pub const IN_FLIGHT: u32 = 13;
    pub const MAX_IN_FLIGHT: u32 = 14;
    pub const RULE: u32 = 15;
    pub const CONFIG_VERSION: u32 = 16;
    pub const SHADOW_DENIED_BY: u32 = 17;
    pub const BYPASSED: u32 = 18;
    pub const NOTHING_TO_RELEASE: u32 = 19;
}

/// What an Acquire answers: the engine's decision, with the lease's expiry as wall-clock time.
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireAnswer {
    /// None only once cleared (then it encodes as an empty message).
    decision: Option<Decision>,
    /// The lease's expiry on the wall clock (granted only).
    expires_at: Option<Timestamp>,
    /// The lease id's wire form (granted only), written once.
    lease_id: [u8; 16],
    config_version: u64,
    /// The encoded length, counted once (prost's encode and the gRPC frame's prefix both ask for it).
    len: usize,
}

impl AcquireAnswer {
    /// `decision` as answered under the rules of `config_version`.
    pub fn new(decision: Decision, clock: &dyn Clock, config_version: u64) -> Self {
        let expires_at = decision
            .grant()
            .map(|g| timestamp_out(clock.wall(g.expires_at)));
        let lease_id = decision.grant().map_or([0; 16], |g| g.lease_id.hex());
        let mut answer = Self {
            decision: Some(decision),
            expires_at,
            lease_id,
            config_version,
            len: 0,
        };
        let mut len = Len(0);
        answer.fields(&mut len);
        answer.len = len.0;
        answer
    }

    /// The generated message (for in-process callers of the service trait).
    pub fn into_pb(self) -> pb::AcquireResponse {
        let Some(d) = self.decision else {
            return pb::AcquireResponse::default();
        };
        let mut out = pb::AcquireResponse {
            rule: d.rule.to_owned(),
            config_version: self.config_version,
            remaining: d.remaining,
            limit: d.limit,
            reset_after: Some(duration_out(d.reset_after)),
            resource: d.resource.to_string(),
            in_flight: d.in_flight,
            max_in_flight: d.max_in_flight,
            lease_expires_at: self.expires_at,
            ..Default::default()
        };
        let shadow = d.shadow_denied_by().unwrap_or_default().to_owned();
        match d.verdict {
            Verdict::Granted(g) => {
                out.granted = true;
                out.decision = pb::Decision::Granted.into();
                out.lease_id = g.lease_id.to_hex_string();
                out.lease_ttl = Some(duration_out(nanos(g.ttl)));
                out.replayed = g.replayed;
                out.shadow_denied_by = shadow;
                out.bypassed = g.bypassed;
                out.nothing_to_release = g.nothing_held;
            }
            Verdict::Denied {
                reason,
                retry_after,
                denied_by,
            } => {
                out.decision = decision_out(reason).into();
                out.retry_after = Some(duration_out(retry_after));
                out.denied_by = denied_by;
            }
        }
        out
    }

    /// The wire enum value of the decision.
    fn decision_number(d: &Decision) -> i32 {
        match &d.verdict {
            Verdict::Granted(_) => pb::Decision::Granted.into(),
            Verdict::Denied { reason, .. } => decision_out(*reason).into(),
        }
    }

    /// The fields in field-number order, each as proto3 writes it (a default scalar or string is left out,
    /// a present message is written even when empty), into `sink`.
    fn fields(&self, sink: &mut impl Sink) {
        let Some(d) = &self.decision else { return };
        let grant = d.grant();
        sink.varint(tag::GRANTED, grant.is_some().into());
        sink.varint(tag::DECISION, Self::decision_number(d) as u64);
        if let Some(g) = grant {
            sink.bytes(tag::LEASE_ID, &self.lease_id);
            if let Some(t) = &self.expires_at {
                sink.time(tag::LEASE_EXPIRES_AT, t.seconds, t.nanos);
            }
            sink.duration(tag::LEASE_TTL, nanos(g.ttl));
        }
        if let Verdict::Denied { retry_after, .. } = &d.verdict {
            sink.duration(tag::RETRY_AFTER, *retry_after);
        }
        sink.varint(tag::REMAINING, d.remaining);
        sink.varint(tag::LIMIT, d.limit);
        sink.duration(tag::RESET_AFTER, d.reset_after);
        if let Verdict::Denied { denied_by, .. } = &d.verdict {
            sink.bytes(tag::DENIED_BY, denied_by.as_bytes());
        }
        sink.varint(tag::REPLAYED, grant.is_some_and(|g| g.replayed).into());
        sink.bytes(tag::RESOURCE, d.resource.as_str().as_bytes());
        sink.varint(tag::IN_FLIGHT, d.in_flight.into());
        sink.varint(tag::MAX_IN_FLIGHT, d.max_in_flight.into());
        sink.bytes(tag::RULE, d.rule.as_bytes());
        sink.varint(tag::CONFIG_VERSION, self.config_version);
        if let (Some(_), Some(by)) = (grant, d.shadow_denied_by()) {
            sink.bytes(tag::SHADOW_DENIED_BY, by.as_bytes());
        }
        sink.varint(tag::BYPASSED, grant.is_some_and(|g| g.bypassed).into());
        sink.varint(
            tag::NOTHING_TO_RELEASE,
            grant.is_some_and(|g| g.nothing_held).into(),
        );
    }
}

/// Where the fields go: their encoded length ([`Len`]) or their bytes ([`Writer`]). A zero scalar and an
/// empty string are left out, as proto3 does.
trait Sink {
    /// An unsigned integer, a bool, or a (non-negative) enum value.
    fn varint(&mut self, tag: u32, v: u64);
    /// A string (UTF-8 already) or bytes.
    fn bytes(&mut self, tag: u32, b: &[u8]);
    /// A present `google.protobuf.Duration` or `Timestamp` (the same two fields): written even when zero.
    fn time(&mut self, tag: u32, seconds: i64, nanos: i32);

    /// A present `google.protobuf.Duration` of `n` nanoseconds.
    fn duration(&mut self, tag: u32, n: Nanos) {
        let d = duration_out(n);
        self.time(tag, d.seconds, d.nanos);
    }
}

/// The wire values of a Duration's or Timestamp's two fields (int64, int32: a negative one is ten bytes).
fn time_values(seconds: i64, nanos: i32) -> [u64; 2] {
    [seconds as u64, i64::from(nanos) as u64]
}

/// The encoded length of a Duration's or Timestamp's fields.
fn time_len(seconds: i64, nanos: i32) -> usize {
    time_values(seconds, nanos)
        .iter()
        .filter(|&&v| v != 0)
        .map(|&v| 1 + encoded_len_varint(v))
        .sum()
}

/// Counts encoded bytes.
struct Len(usize);

impl Sink for Len {
    #[inline]
    fn varint(&mut self, tag: u32, v: u64) {
        if v != 0 {
            self.0 += key_len(tag) + encoded_len_varint(v);
        }
    }

    #[inline]
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.0 += key_len(tag) + encoded_len_varint(b.len() as u64) + b.len();
        }
    }

    #[inline]
    fn time(&mut self, tag: u32, seconds: i64, nanos: i32) {
        let inner = time_len(seconds, nanos);
        self.0 += key_len(tag) + encoded_len_varint(inner as u64) + inner;
    }
}

/// Writes the fields into a slice exactly [`Len`] long: a byte at a time with an index, where a `BufMut`
/// checks its capacity on every byte.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    #[inline]
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out[self.at] = (v as u8) | 0x80;
            self.at += 1;
            v >>= 7;
        }
        self.out[self.at] = v as u8;
        self.at += 1;
    }

    #[inline]
    fn key(&mut self, tag: u32, wire_type: WireType) {
        self.raw_varint(u64::from(tag << 3 | wire_type as u32));
    }
}

impl Sink for Writer<'_> {
    #[inline]
    fn varint(&mut self, tag: u32, v: u64) {
        if v != 0 {
            self.key(tag, WireType::Varint);
            self.raw_varint(v);
        }
    }

    #[inline]
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.key(tag, WireType::LengthDelimited);
            self.raw_varint(b.len() as u64);
            self.out[self.at..self.at + b.len()].copy_from_slice(b);
            self.at += b.len();
        }
    }

    #[inline]
    fn time(&mut self, tag: u32, seconds: i64, nanos: i32) {
        self.key(tag, WireType::LengthDelimited);
        self.raw_varint(time_len(seconds, nanos) as u64);
        for (field, v) in (1..).zip(time_values(seconds, nanos)) {
            self.varint(field, v);
        }
    }
}

/// An answer at most this long is written on the stack, a longer one (long names) into a heap buffer;
/// either is copied into the call's buffer in one piece.
const STACK_BYTES: usize = 256;

impl Message for AcquireAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let len = self.encoded_len();
        let mut stack = [0u8; STACK_BYTES];
        let mut heap = Vec::new();
        let out = if len <= STACK_BYTES {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        let mut writer = Writer { out, at: 0 };
        self.fields(&mut writer);
        debug_assert_eq!(writer.at, len);
        buf.put_slice(writer.out);
    }

    /// Encode-only (clients decode `AcquireResponse`): every field is skipped as unknown.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = Self {
            decision: None,
            expires_at: None,
            lease_id: [0; 16],
            config_version: 0,
            len: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use proptest::prelude::*;

    use super::*;
    use crate::{
        clock::FakeClock,
        engine::{Denial, Grant, LeaseId, Name},
    };

    fn denial(i: u8) -> Denial {
        [
            Denial::RateLimited,
            Denial::ConcurrencyLimited,
            Denial::CircuitOpen,
            Denial::Paused,
        ][usize::from(i % 4)]
    }

    prop_compose! {
        fn decisions()(
            granted: bool,
            lease in any::<u64>(),
            expires_at in any::<u64>(),
            ttl in 0u64..10_000_000_000_000,
            replayed: bool,
            reason: u8,
            retry_after in any::<u64>(),
            denied_by in "[a-z._]{0,40}",
            resource in "[a-zA-Z0-9.:_-]{0,300}",
            configured: bool,
            remaining in prop_oneof![Just(0u64), any::<u64>()],
            limit in prop_oneof![Just(0u64), any::<u64>()],
            reset_after in prop_oneof![Just(0u64), any::<u64>()],
            in_flight in prop_oneof![Just(0u32), any::<u32>()],
            max_in_flight in prop_oneof![Just(0u32), any::<u32>()],
            shadow in proptest::option::of("[a-z=._]{0,40}"),
            bypassed: bool,
            nothing_held: bool,
        ) -> Decision {
            let verdict = if granted {
                Verdict::Granted(Grant {
                    lease_id: LeaseId(lease),
                    expires_at,
                    ttl: Duration::from_nanos(ttl),
                    replayed,
                    bypassed,
                    nothing_held,
                })
            } else {
                Verdict::Denied { reason: denial(reason), retry_after, denied_by }
            };
            let name = if configured {
                Name::Configured(crate::engine::intern(&resource))
            } else {
                Name::Given(Arc::from(resource.as_str()))
            };
            Decision {
                resource: name,
                rule: crate::engine::intern("rule.*"),
                verdict,
                remaining,
                limit,
                reset_after,
                in_flight,
                max_in_flight,
                notes: shadow.map(|s| Box::new(crate::engine::Notes { transition: None, shadow_denied_by: Some(s) })),
            }
        }
    }

    proptest! {
        /// The answer's bytes are exactly the generated message's, short names (written on the stack) and
        /// long ones (written straight into the buffer) alike.
        #[test]
        fn encodes_as_the_generated_message(d in decisions(), version in prop_oneof![Just(0u64), any::<u64>()]) {
            let clock = FakeClock::new();
            let answer = AcquireAnswer::new(d, &clock, version);
            let bytes = answer.encode_to_vec();
            prop_assert_eq!(bytes.len(), answer.encoded_len());
            let pb = answer.into_pb();
            prop_assert_eq!(&bytes, &pb.encode_to_vec());
            prop_assert_eq!(pb::AcquireResponse::decode(bytes.as_slice()).unwrap(), pb);
        }
    }

    #[test]
    fn a_grant_carries_its_lease_and_a_cleared_answer_is_empty() {
        let clock = FakeClock::new();
        let d = Decision {
            resource: Name::Configured(crate::engine::intern("llm.openai")),
            rule: crate::engine::intern("llm.openai"),
            verdict: Verdict::Granted(Grant {
                lease_id: LeaseId(0xab),
                expires_at: 1_700_000_000_123_456_789,
                ttl: Duration::from_secs(30),
                replayed: true,
                bypassed: false,
                nothing_held: false,
            }),
            remaining: 9,
            limit: 10,
            reset_after: 100_000_000,
            in_flight: 1,
            max_in_flight: 20,
            notes: None,
        };
        let mut answer = AcquireAnswer::new(d, &clock, 7);
        let pb = pb::AcquireResponse::decode(answer.encode_to_vec().as_slice()).unwrap();
        assert!(pb.granted && pb.replayed);
        assert_eq!(pb.lease_id, "00000000000000ab");
        assert_eq!(
            pb.lease_expires_at,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789
            })
        );
        assert_eq!(pb.lease_ttl.map(|d| d.seconds), Some(30));
        assert_eq!((pb.remaining, pb.limit, pb.config_version), (9, 10, 7));
        assert_eq!(pb.resource, "llm.openai");
        answer.clear();
        assert_eq!(answer.encoded_len(), 0);
        assert!(answer.encode_to_vec().is_empty());
        assert_eq!(answer.into_pb(), pb::AcquireResponse::default());
    }
}
