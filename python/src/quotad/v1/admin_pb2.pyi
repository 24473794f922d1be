import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quotad.v1 import quota_pb2 as _quota_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListResourcesRequest(_message.Message):
    __slots__ = ("prefix", "rule", "page_size", "page_token")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    rule: str
    page_size: int
    page_token: str
    def __init__(self, prefix: _Optional[str] = ..., rule: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ResourceLimits(_message.Message):
    __slots__ = ("rate_limit", "rate_period", "burst", "max_concurrent", "partitions", "rate_algorithm", "overrides", "bypassed", "priority_classes")
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RATE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    RATE_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_CLASSES_FIELD_NUMBER: _ClassVar[int]
    rate_limit: int
    rate_period: _duration_pb2.Duration
    burst: int
    max_concurrent: int
    partitions: _containers.RepeatedScalarFieldContainer[str]
    rate_algorithm: str
    overrides: _containers.RepeatedScalarFieldContainer[str]
    bypassed: _containers.RepeatedScalarFieldContainer[str]
    priority_classes: _containers.RepeatedCompositeFieldContainer[PriorityClass]
    def __init__(self, rate_limit: _Optional[int] = ..., rate_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., burst: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., partitions: _Optional[_Iterable[str]] = ..., rate_algorithm: _Optional[str] = ..., overrides: _Optional[_Iterable[str]] = ..., bypassed: _Optional[_Iterable[str]] = ..., priority_classes: _Optional[_Iterable[_Union[PriorityClass, _Mapping]]] = ...) -> None: ...

class PriorityClass(_message.Message):
    __slots__ = ("name", "reserve", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    reserve: float
    default: bool
    def __init__(self, name: _Optional[str] = ..., reserve: _Optional[float] = ..., default: bool = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("resource", "rule", "limits", "tokens_available", "in_flight", "live_leases", "circuit_state", "effective_rate_per_second", "configured_rate_per_second", "paused_until")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    resource: str
    rule: str
    limits: ResourceLimits
    tokens_available: int
    in_flight: int
    live_leases: int
    circuit_state: _quota_pb2.CircuitState
    effective_rate_per_second: float
    configured_rate_per_second: float
    paused_until: _timestamp_pb2.Timestamp
    def __init__(self, resource: _Optional[str] = ..., rule: _Optional[str] = ..., limits: _Optional[_Union[ResourceLimits, _Mapping]] = ..., tokens_available: _Optional[int] = ..., in_flight: _Optional[int] = ..., live_leases: _Optional[int] = ..., circuit_state: _Optional[_Union[_quota_pb2.CircuitState, str]] = ..., effective_rate_per_second: _Optional[float] = ..., configured_rate_per_second: _Optional[float] = ..., paused_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "live_keys", "max_live_keys", "live_leases", "max_leases", "config_version", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LIVE_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIVE_KEYS_FIELD_NUMBER: _ClassVar[int]
    LIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    MAX_LEASES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[ResourceUsage]
    live_keys: int
    max_live_keys: int
    live_leases: int
    max_leases: int
    config_version: int
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[ResourceUsage, _Mapping]]] = ..., live_keys: _Optional[int] = ..., max_live_keys: _Optional[int] = ..., live_leases: _Optional[int] = ..., max_leases: _Optional[int] = ..., config_version: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResetBreakerRequest(_message.Message):
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

class ResetBreakerResponse(_message.Message):
    __slots__ = ("previous_state",)
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    previous_state: _quota_pb2.CircuitState
    def __init__(self, previous_state: _Optional[_Union[_quota_pb2.CircuitState, str]] = ...) -> None: ...

class ForceOpenBreakerRequest(_message.Message):
    __slots__ = ("resource", "descriptors", "duration")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    duration: _duration_pb2.Duration
    def __init__(self, resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ForceOpenBreakerResponse(_message.Message):
    __slots__ = ("previous_state", "half_open_at")
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_AT_FIELD_NUMBER: _ClassVar[int]
    previous_state: _quota_pb2.CircuitState
    half_open_at: _timestamp_pb2.Timestamp
    def __init__(self, previous_state: _Optional[_Union[_quota_pb2.CircuitState, str]] = ..., half_open_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("resource", "page_size", "prefix", "rule", "page_token")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource: str
    page_size: int
    prefix: str
    rule: str
    page_token: str
    def __init__(self, resource: _Optional[str] = ..., page_size: _Optional[int] = ..., prefix: _Optional[str] = ..., rule: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class LeaseInfo(_message.Message):
    __slots__ = ("lease_id", "resource", "descriptors", "permits", "expires_at", "client_id", "probe", "owner")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    permits: int
    expires_at: _timestamp_pb2.Timestamp
    client_id: str
    probe: bool
    owner: str
    def __init__(self, lease_id: _Optional[str] = ..., resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ..., permits: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_id: _Optional[str] = ..., probe: bool = ..., owner: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases", "truncated", "next_page_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseInfo]
    truncated: bool
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseInfo, _Mapping]]] = ..., truncated: bool = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResetBucketsRequest(_message.Message):
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

class ResetBucketsResponse(_message.Message):
    __slots__ = ("levels_refilled",)
    LEVELS_REFILLED_FIELD_NUMBER: _ClassVar[int]
    levels_refilled: int
    def __init__(self, levels_refilled: _Optional[int] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class RevokeLeaseResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: bool = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("config_version", "resources")
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    config_version: int
    resources: int
    def __init__(self, config_version: _Optional[int] = ..., resources: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("resource", "descriptors", "permits", "priority", "identity")
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
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    resource: str
    descriptors: _containers.ScalarMap[str, str]
    permits: int
    priority: str
    identity: str
    def __init__(self, resource: _Optional[str] = ..., descriptors: _Optional[_Mapping[str, str]] = ..., permits: _Optional[int] = ..., priority: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class LevelExplanation(_message.Message):
    __slots__ = ("level", "has_rate", "tokens_available", "burst", "rate_per_second", "in_flight", "max_in_flight", "decision", "retry_after", "algorithm", "shadow", "overridden", "reserved_tokens", "reserved_in_flight")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    HAS_RATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    level: str
    has_rate: bool
    tokens_available: int
    burst: int
    rate_per_second: float
    in_flight: int
    max_in_flight: int
    decision: _quota_pb2.Decision
    retry_after: _duration_pb2.Duration
    algorithm: str
    shadow: bool
    overridden: bool
    reserved_tokens: int
    reserved_in_flight: int
    def __init__(self, level: _Optional[str] = ..., has_rate: bool = ..., tokens_available: _Optional[int] = ..., burst: _Optional[int] = ..., rate_per_second: _Optional[float] = ..., in_flight: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., decision: _Optional[_Union[_quota_pb2.Decision, str]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., algorithm: _Optional[str] = ..., shadow: bool = ..., overridden: bool = ..., reserved_tokens: _Optional[int] = ..., reserved_in_flight: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("resource", "rule", "config_version", "permits", "would_grant", "decision", "retry_after", "denied_by", "circuit_state", "breaker_configured", "half_open_at", "half_open_probes_left", "paused_until", "effective_rate_per_second", "configured_rate_per_second", "levels", "shadow_denied_by", "bypassed_by", "priority")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    WOULD_GRANT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    DENIED_BY_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_AT_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_PROBES_LEFT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DENIED_BY_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_BY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    resource: str
    rule: str
    config_version: int
    permits: int
    would_grant: bool
    decision: _quota_pb2.Decision
    retry_after: _duration_pb2.Duration
    denied_by: str
    circuit_state: _quota_pb2.CircuitState
    breaker_configured: bool
    half_open_at: _timestamp_pb2.Timestamp
    half_open_probes_left: int
    paused_until: _timestamp_pb2.Timestamp
    effective_rate_per_second: float
    configured_rate_per_second: float
    levels: _containers.RepeatedCompositeFieldContainer[LevelExplanation]
    shadow_denied_by: str
    bypassed_by: str
    priority: str
    def __init__(self, resource: _Optional[str] = ..., rule: _Optional[str] = ..., config_version: _Optional[int] = ..., permits: _Optional[int] = ..., would_grant: bool = ..., decision: _Optional[_Union[_quota_pb2.Decision, str]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., denied_by: _Optional[str] = ..., circuit_state: _Optional[_Union[_quota_pb2.CircuitState, str]] = ..., breaker_configured: bool = ..., half_open_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., half_open_probes_left: _Optional[int] = ..., paused_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., effective_rate_per_second: _Optional[float] = ..., configured_rate_per_second: _Optional[float] = ..., levels: _Optional[_Iterable[_Union[LevelExplanation, _Mapping]]] = ..., shadow_denied_by: _Optional[str] = ..., bypassed_by: _Optional[str] = ..., priority: _Optional[str] = ...) -> None: ...
