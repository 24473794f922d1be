//! The client's deadline: a call whose `grpc-timeout` passes before its answer is ready is answered
//! CANCELLED "Timeout expired", as tonic's server answered it (the client has stopped waiting by then; this
//! frees what the call holds). A header quotad cannot read is ignored, as tonic ignored it.

use std::{future::Future, time::Duration};

use http::{HeaderMap, HeaderName};
use tonic::Status;

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-timeout` the client sent: 1 to 8 ASCII digits and a unit (H, M, S, m, u, n), per the gRPC
/// over HTTP/2 spec. None when absent or malformed.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: no overflow below, even in hours.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What a call that ran out of time gets.
pub fn expired() -> Status {
    Status::cancelled("Timeout expired")
}

/// `call`'s answer, or `timed_out()` once `timeout` (when there is one) has passed.
pub async fn within<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = T>,
    timed_out: impl FnOnce() -> T,
) -> T {
    match timeout {
        Some(t) => tokio::time::timeout(t, call)
            .await
            .unwrap_or_else(|_| timed_out()),
        None => call.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse("0m"), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "m",
            "5",
            "123456789m",
            "+5m",
            "-5m",
            "5x",
            "5 m",
            "1.5S",
            "5mm",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_timeout_gets_the_fallback() {
        let never = std::future::pending::<u8>();
        assert_eq!(
            within(Some(Duration::from_millis(50)), never, || 7).await,
            7
        );
        let now = std::future::ready(1u8);
        assert_eq!(within(Some(Duration::ZERO), now, || 7).await, 1);
        assert_eq!(within(None, std::future::ready(2u8), || 7).await, 2);
    }
}
