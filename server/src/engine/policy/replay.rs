//! A retried `request_id`: its first answer replayed, or a different request under it refused.

use crate::engine::{Decision, EngineError, Verdict};

/// A request_id's first answer is remembered for it only when it granted (a denial charged nothing, so a
/// retry is simply decided again).
pub fn remembered(first: &Decision) -> bool {
    first.granted()
}

/// A request_id seen within its window: the same request (same fingerprint) is answered again with the
/// remembered grant, marked replayed and making no transition (the first call made and reported it); a
/// different request under the same id is refused, naming the id.
pub fn replay(
    first: &Decision,
    first_fingerprint: u64,
    (resource, request_id, fingerprint): (&str, &str, u64),
) -> Result<Decision, EngineError> {
    if first_fingerprint != fingerprint {
        return Err(request_id_conflict(resource, request_id));
    }
    let mut again = first.clone();
    if let Verdict::Granted(g) = &mut again.verdict {
        g.replayed = true;
    }
    again.set_transition(None);
    Ok(again)
}

/// The refusal of a request_id reused for a different request (a store that finds the conflict itself,
/// as the Redis script does, answers with this too).
pub fn request_id_conflict(resource: &str, request_id: &str) -> EngineError {
    EngineError::FailedPrecondition(format!(
        "request_id: '{request_id}' was already used for a different request on '{resource}' (permits, \
         lease_ttl or descriptors differ); use a new request_id per logical acquire"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        clock::Nanos,
        engine::{BreakerState, Denial, Grant, Transition, policy::Tightest},
    };

    const SEC: Nanos = 1_000_000_000;

    fn answer(granted: bool) -> Decision {
        let verdict = if granted {
            Verdict::Granted(Grant {
                lease_id: crate::engine::LeaseId(7),
                expires_at: SEC,
                ttl: Duration::from_secs(1),
                replayed: false,
                bypassed: false,
                nothing_held: false,
            })
        } else {
            Verdict::Denied {
                reason: Denial::RateLimited,
                retry_after: SEC,
                denied_by: "rate".into(),
            }
        };
        let made = Transition {
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
            reason: crate::engine::breaker::Reason::OpenPeriodOver,
        };
        Tightest::default().decision("r".into(), "r", verdict, Some(made))
    }

    #[test]
    fn a_request_id_replays_its_grant_once_made_and_refuses_another_request() {
        assert!(remembered(&answer(true)));
        assert!(!remembered(&answer(false)), "a denial charged nothing");
        let again = replay(&answer(true), 42, ("r", "id-1", 42)).unwrap();
        let Verdict::Granted(g) = &again.verdict else {
            panic!("the grant replayed");
        };
        assert!(g.replayed);
        assert_eq!(g.lease_id, crate::engine::LeaseId(7), "the same lease");
        assert_eq!(
            again.transition(),
            None,
            "the first call made and reported it"
        );
        let refused = replay(&answer(true), 42, ("r", "id-1", 43)).unwrap_err();
        assert!(matches!(&refused, EngineError::FailedPrecondition(m)
            if m.contains("request_id: 'id-1'") && m.contains("on 'r'")));
    }
}
