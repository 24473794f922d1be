"""The ready classifiers, on duck-typed stand-ins for botocore, requests, httpx and aiohttp objects."""

from __future__ import annotations

import datetime
import email.utils
from typing import Any, Dict

from quotad import Throttled, default_classifier
from quotad.classify import FAILURE, SUCCESS, parse_retry_after, throttled


class ClientError(Exception):
    """botocore.exceptions.ClientError's shape."""

    def __init__(self, code: str, status: int = 400, headers: Dict[str, str] = {}) -> None:
        super().__init__(code)
        self.response: Dict[str, Any] = {
            "Error": {"Code": code, "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        }


def response(status: int, **headers: str) -> Any:
    return type("Response", (), {"status_code": status, "headers": {k.replace("_", "-"): v for k, v in headers.items()}})()


def test_botocore_throttles() -> None:
    for code in ("ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"):
        assert default_classifier(ClientError(code)) == throttled(None)
    assert default_classifier(ClientError("ThrottlingException", 400, {"retry-after": "7"})) == throttled(7.0)
    assert default_classifier(ClientError("ValidationException")) == FAILURE
    assert default_classifier(ClientError("Whatever", 429)).throttled


def test_http_responses_returned_or_raised() -> None:
    assert default_classifier(response(200)) == SUCCESS
    assert default_classifier(response(404)) == SUCCESS, "a 404 is the downstream answering"
    assert default_classifier(response(500)) == FAILURE
    assert default_classifier(response(429)) == throttled(None)
    assert default_classifier(response(429, Retry_After="3")) == throttled(3.0)
    assert default_classifier(response(503, Retry_After="2")) == throttled(2.0)
    assert default_classifier(response(503)) == FAILURE
    assert default_classifier(response(429, retry_after_ms="1500")) == throttled(1.5)

    class HTTPError(Exception):
        def __init__(self, r: Any) -> None:
            self.response = r

    assert default_classifier(HTTPError(response(429, Retry_After="4"))) == throttled(4.0)
    assert default_classifier(HTTPError(response(500))) == FAILURE
    aiohttp_like = type("ClientResponse", (), {"status": 429, "headers": {"Retry-After": "1"}})()
    assert default_classifier(aiohttp_like) == throttled(1.0)


def test_exceptions_that_carry_their_own_hints() -> None:
    assert default_classifier(Throttled(retry_after=2.5)) == throttled(2.5)
    e = RuntimeError("busy")
    e.retry_after = 9  # type: ignore[attr-defined]
    assert default_classifier(e) == throttled(9.0)
    s = RuntimeError("429")
    s.status_code = 429  # type: ignore[attr-defined]
    assert default_classifier(s).throttled
    assert default_classifier(ValueError("bug")) == FAILURE
    assert default_classifier("a plain value") == SUCCESS


def test_retry_after_parsing() -> None:
    now = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    later = email.utils.format_datetime(now + datetime.timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after(email.utils.format_datetime(now - datetime.timedelta(seconds=5), usegmt=True), now) == 0.0
    assert parse_retry_after("120") == 120.0 and parse_retry_after(b"1.5") == 1.5
    for junk in (None, "", "soon", "-", "nan", "inf", True):
        assert parse_retry_after(junk) is None or parse_retry_after(junk) == 0.0
    assert parse_retry_after("-3") == 0.0
