import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_GRANTED: _ClassVar[Decision]
    DECISION_RATE_LIMITED: _ClassVar[Decision]
    DECISION_CONCURRENCY_LIMITED: _ClassVar[Decision]
    DECISION_CIRCUIT_OPEN: _ClassVar[Decision]
    DECISION_PAUSED: _ClassVar[Decision]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCESS: _ClassVar[Outcome]
    OUTCOME_FAILURE: _ClassVar[Outcome]
    OUTCOME_THROTTLED: _ClassVar[Outcome]
    OUTCOME_UNKNOWN: _ClassVar[Outcome]

class ThrottleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THROTTLE_KIND_UNSPECIFIED: _ClassVar[ThrottleKind]
    THROTTLE_KIND_THROTTLED: _ClassVar[ThrottleKind]
    THROTTLE_KIND_ERROR: _ClassVar[ThrottleKind]
    THROTTLE_KIND_TIMEOUT: _ClassVar[ThrottleKind]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]
DECISION_UNSPECIFIED: Decision
DECISION_GRANTED: Decision
DECISION_RATE_LIMITED: Decision
DECISION_CONCURRENCY_LIMITED: Decision
DECISION_CIRCUIT_OPEN: Decision
DECISION_PAUSED: Decision
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCESS: Outcome
OUTCOME_FAILURE: Outcome
OUTCOME_THROTTLED: Outcome
OUTCOME_UNKNOWN: Outcome
THROTTLE_KIND_UNSPECIFIED: ThrottleKind
THROTTLE_KIND_THROTTLED: ThrottleKind
THROTTLE_KIND_ERROR: ThrottleKind
THROTTLE_KIND_TIMEOUT: ThrottleKind
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState

class AcquireRequest(_message.Message):
    __slots__ = ("resource", "descriptors", "permits", "lease_ttl", "max_wait", "request_id", "client_id", "priority")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    permits: int
    lease_ttl: _duration_pb2.Duration
    max_wait: _duration_pb2.Duration
    request_id: str
    client_id: str
    priority: str
    def __init__(self, resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ..., permits: _Optional[int] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ..., client_id: _Optional[str] = ..., priority: _Optional[str] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("granted", "decision", "lease_id", "lease_expires_at", "lease_ttl", "retry_after", "remaining", "limit", "reset_after", "denied_by", "replayed", "resource", "in_flight", "max_in_flight", "rule", "config_version", "shadow_denied_by", "bypassed", "nothing_to_release")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    DENIED_BY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DENIED_BY_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_FIELD_NUMBER: _ClassVar[int]
    NOTHING_TO_RELEASE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    decision: Decision
    lease_id: str
    lease_expires_at: _timestamp_pb2.Timestamp
    lease_ttl: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    remaining: int
    limit: int
    reset_after: _duration_pb2.Duration
    denied_by: str
    replayed: bool
    resource: str
    in_flight: int
    max_in_flight: int
    rule: str
    config_version: int
    shadow_denied_by: str
    bypassed: bool
    nothing_to_release: bool
    def __init__(self, granted: bool = ..., decision: _Optional[_Union[Decision, str]] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., remaining: _Optional[int] = ..., limit: _Optional[int] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., denied_by: _Optional[str] = ..., replayed: bool = ..., resource: _Optional[str] = ..., in_flight: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., rule: _Optional[str] = ..., config_version: _Optional[int] = ..., shadow_denied_by: _Optional[str] = ..., bypassed: bool = ..., nothing_to_release: bool = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "outcome", "used_permits")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    USED_PERMITS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    outcome: Outcome
    used_permits: int
    def __init__(self, lease_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., used_permits: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released", "reason", "refunded_permits", "charged_permits", "circuit_state")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_PERMITS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_PERMITS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    released: bool
    reason: str
    refunded_permits: int
    charged_permits: int
    circuit_state: CircuitState
    def __init__(self, released: bool = ..., reason: _Optional[str] = ..., refunded_permits: _Optional[int] = ..., charged_permits: _Optional[int] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("lease_id", "lease_ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    lease_ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("lease_expires_at", "lease_ttl")
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    lease_expires_at: _timestamp_pb2.Timestamp
    lease_ttl: _duration_pb2.Duration
    def __init__(self, lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ReportThrottleRequest(_message.Message):
    __slots__ = ("resource", "descriptors", "kind", "retry_after", "lease_id", "message", "client_id")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    kind: ThrottleKind
    retry_after: _duration_pb2.Duration
    lease_id: str
    message: str
    client_id: str
    def __init__(self, resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ..., kind: _Optional[_Union[ThrottleKind, str]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_id: _Optional[str] = ..., message: _Optional[str] = ..., client_id: _Optional[str] = ...) -> None: ...

class ReportThrottleResponse(_message.Message):
    __slots__ = ("effective_rate_per_second", "configured_rate_per_second", "circuit_state", "paused_until", "pause_remaining", "rate_decreased")
    EFFECTIVE_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REMAINING_FIELD_NUMBER: _ClassVar[int]
    RATE_DECREASED_FIELD_NUMBER: _ClassVar[int]
    effective_rate_per_second: float
    configured_rate_per_second: float
    circuit_state: CircuitState
    paused_until: _timestamp_pb2.Timestamp
    pause_remaining: _duration_pb2.Duration
    rate_decreased: bool
    def __init__(self, effective_rate_per_second: _Optional[float] = ..., configured_rate_per_second: _Optional[float] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ..., paused_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pause_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rate_decreased: bool = ...) -> None: ...

class GetCircuitStateRequest(_message.Message):
    __slots__ = ("resource", "descriptors")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    def __init__(self, resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WatchCircuitStateRequest(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[GetCircuitStateRequest]
    def __init__(self, resources: _Optional[_Iterable[_Union[GetCircuitStateRequest, _Mapping]]] = ...) -> None: ...

class CircuitStateEvent(_message.Message):
    __slots__ = ("state", "initial")
    STATE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    state: GetCircuitStateResponse
    initial: bool
    def __init__(self, state: _Optional[_Union[GetCircuitStateResponse, _Mapping]] = ..., initial: bool = ...) -> None: ...

class GetCircuitStateResponse(_message.Message):
    __slots__ = ("state", "since", "failures", "calls", "failure_rate", "consecutive_failures", "half_open_at", "half_open_after", "half_open_probes_left", "half_open_successes_needed", "effective_rate_per_second", "configured_rate_per_second", "paused_until", "breaker_configured", "resource")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_AT_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_AFTER_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_PROBES_LEFT_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_SUCCESSES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    BREAKER_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    state: CircuitState
    since: _timestamp_pb2.Timestamp
    failures: int
    calls: int
    failure_rate: float
    consecutive_failures: int
    half_open_at: _timestamp_pb2.Timestamp
    half_open_after: _duration_pb2.Duration
    half_open_probes_left: int
    half_open_successes_needed: int
    effective_rate_per_second: float
    configured_rate_per_second: float
    paused_until: _timestamp_pb2.Timestamp
    breaker_configured: bool
    resource: str
    def __init__(self, state: _Optional[_Union[CircuitState, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failures: _Optional[int] = ..., calls: _Optional[int] = ..., failure_rate: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., half_open_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., half_open_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., half_open_probes_left: _Optional[int] = ..., half_open_successes_needed: _Optional[int] = ..., effective_rate_per_second: _Optional[float] = ..., configured_rate_per_second: _Optional[float] = ..., paused_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., breaker_configured: bool = ..., resource: _Optional[str] = ...) -> None: ...
