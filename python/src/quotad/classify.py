"""Deciding what a downstream's answer means for quotad: a success, a failure, or a throttle (with the
downstream's retry-after). Duck-typed, so no extra dependency is needed:

- botocore ``ClientError`` whose code is ``ThrottlingException``, ``TooManyRequestsException``,
  ``ServiceQuotaExceededException`` (and AWS's other throttle codes),
- HTTP responses (requests, httpx, aiohttp, urllib) with status 429, or 503 with a ``Retry-After``
  header, and exceptions that carry such a response (``requests.HTTPError``, ``httpx.HTTPStatusError``),
- exceptions with a ``retry_after`` attribute, or a ``status_code`` / ``status`` of 429,
- :class:`quotad.Throttled`, raised by your own code.

``Retry-After`` may be seconds or an HTTP date; ``retry-after-ms`` (sent by some LLM APIs) is read too.
:func:`default_classifier` recognises all of these; pass your own ``classify`` for anything else.
"""

from __future__ import annotations

import datetime
import email.utils
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from quotad._errors import Throttled

#: AWS error codes that mean "slow down".
AWS_THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceQuotaExceededException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "LimitExceededException",
    }
)


@dataclass(frozen=True)
class Classification:
    """``kind`` is "success", "failure" or "throttled"; ``retry_after`` (seconds) only for a throttle."""

    kind: str
    retry_after: Optional[float] = None

    @property
    def throttled(self) -> bool:
        return self.kind == "throttled"


SUCCESS = Classification("success")
FAILURE = Classification("failure")


def throttled(retry_after: Optional[float] = None) -> Classification:
    return Classification("throttled", retry_after)


#: What ``classify`` callbacks look like: given the function's return value, or the exception it raised.
Classifier = Callable[[object], Classification]


def parse_retry_after(value: object, now: Optional[datetime.datetime] = None) -> Optional[float]:
    """A ``Retry-After`` value in seconds: a number of seconds, or an HTTP date (seconds from ``now``,
    never negative). None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return max(float(value), 0.0) if value == value else None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        secs = float(text)
    except ValueError:
        pass
    else:
        return max(secs, 0.0) if secs == secs and secs != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return max((when - now).total_seconds(), 0.0)


def _header(headers: object, name: str) -> object:
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is not None:
        found = get(name)
        if found is None:
            found = get(name.lower())
        if found is not None:
            return found
    if isinstance(headers, Mapping):
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == name.lower():
                return v
    return None


def retry_after_from_headers(headers: object) -> Optional[float]:
    """``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds or HTTP date) from any headers object."""
    ms = parse_retry_after(_header(headers, "retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    return parse_retry_after(_header(headers, "Retry-After"))


def _status(obj: object) -> Optional[int]:
    for attr in ("status_code", "status"):
        v = getattr(obj, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def classify_response(response: object) -> Optional[Classification]:
    """An HTTP response's meaning, or None when ``response`` does not look like one."""
    status = _status(response)
    if status is None:
        return None
    retry_after = retry_after_from_headers(getattr(response, "headers", None))
    if status == 429 or (status == 503 and retry_after is not None):
        return throttled(retry_after)
    return FAILURE if status >= 500 else SUCCESS


def _botocore(exc: BaseException) -> Optional[Classification]:
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    meta = response.get("ResponseMetadata")
    status = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
    if code in AWS_THROTTLE_CODES or status == 429:
        headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
        return throttled(retry_after_from_headers(headers))
    return None


def classify_exception(exc: BaseException) -> Classification:
    """An exception's meaning: a throttle if any of the module's rules recognise it, else a failure."""
    if isinstance(exc, Throttled):
        return throttled(exc.retry_after)
    aws = _botocore(exc)
    if aws is not None:
        return aws
    carried = getattr(exc, "retry_after", None)
    if carried is not None:
        return throttled(parse_retry_after(carried))
    status = _status(exc)
    if status == 429:
        return throttled(retry_after_from_headers(getattr(exc, "headers", None)))
    response = getattr(exc, "response", None)
    if response is not None:
        meaning = classify_response(response)
        if meaning is not None and meaning.throttled:
            return meaning
    return FAILURE


def default_classifier(value: object) -> Classification:
    """Exceptions by :func:`classify_exception`; return values that look like HTTP responses by
    :func:`classify_response` (a 429 returned, not raised, is still a throttle); anything else is a success."""
    if isinstance(value, BaseException):
        return classify_exception(value)
    return classify_response(value) or SUCCESS
