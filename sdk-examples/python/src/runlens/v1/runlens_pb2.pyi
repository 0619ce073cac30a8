from runlens.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_STATUS_UNSPECIFIED: _ClassVar[EndStatus]
    END_STATUS_OK: _ClassVar[EndStatus]
    END_STATUS_FAILED: _ClassVar[EndStatus]
END_STATUS_UNSPECIFIED: EndStatus
END_STATUS_OK: EndStatus
END_STATUS_FAILED: EndStatus

class StartRunRequest(_message.Message):
    __slots__ = ("run_id", "name", "attributes", "time_ns")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class EndRunRequest(_message.Message):
    __slots__ = ("run_id", "status", "error", "attributes", "time_ns")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: EndStatus
    error: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[EndStatus, str]] = ..., error: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class StartSpanRequest(_message.Message):
    __slots__ = ("run_id", "span_id", "parent_span_id", "name", "attributes", "time_ns", "fresh_snapshot")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    FRESH_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    span_id: str
    parent_span_id: str
    name: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    fresh_snapshot: bool
    def __init__(self, run_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ..., fresh_snapshot: _Optional[bool] = ...) -> None: ...

class EndSpanRequest(_message.Message):
    __slots__ = ("span_id", "status", "error", "attributes", "time_ns", "fresh_snapshot")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    FRESH_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    status: EndStatus
    error: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    fresh_snapshot: bool
    def __init__(self, span_id: _Optional[str] = ..., status: _Optional[_Union[EndStatus, str]] = ..., error: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ..., fresh_snapshot: _Optional[bool] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("run_id", "span_id", "name", "value", "unit", "attributes", "time_ns")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    span_id: str
    name: str
    value: float
    unit: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    def __init__(self, run_id: _Optional[str] = ..., span_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[float] = ..., unit: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("run_id", "span_id", "name", "attributes", "time_ns")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    span_id: str
    name: str
    attributes: _containers.ScalarMap[str, str]
    time_ns: int
    def __init__(self, run_id: _Optional[str] = ..., span_id: _Optional[str] = ..., name: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class EndRunResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class StartSpanResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class EndSpanResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class RecordMetricResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class RecordEventResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _resources_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class SessionHello(_message.Message):
    __slots__ = ("client_id", "client_name", "pid", "cuda_visible_devices", "nvidia_visible_devices")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CUDA_VISIBLE_DEVICES_FIELD_NUMBER: _ClassVar[int]
    NVIDIA_VISIBLE_DEVICES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_name: str
    pid: int
    cuda_visible_devices: str
    nvidia_visible_devices: str
    def __init__(self, client_id: _Optional[str] = ..., client_name: _Optional[str] = ..., pid: _Optional[int] = ..., cuda_visible_devices: _Optional[str] = ..., nvidia_visible_devices: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("seq", "hello", "start_run", "end_run", "start_span", "end_span", "metric", "event", "batch", "stats")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    START_RUN_FIELD_NUMBER: _ClassVar[int]
    END_RUN_FIELD_NUMBER: _ClassVar[int]
    START_SPAN_FIELD_NUMBER: _ClassVar[int]
    END_SPAN_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hello: SessionHello
    start_run: StartRunRequest
    end_run: EndRunRequest
    start_span: StartSpanRequest
    end_span: EndSpanRequest
    metric: Metric
    event: Event
    batch: MessageBatch
    stats: ClientStats
    def __init__(self, seq: _Optional[int] = ..., hello: _Optional[_Union[SessionHello, _Mapping]] = ..., start_run: _Optional[_Union[StartRunRequest, _Mapping]] = ..., end_run: _Optional[_Union[EndRunRequest, _Mapping]] = ..., start_span: _Optional[_Union[StartSpanRequest, _Mapping]] = ..., end_span: _Optional[_Union[EndSpanRequest, _Mapping]] = ..., metric: _Optional[_Union[Metric, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., batch: _Optional[_Union[MessageBatch, _Mapping]] = ..., stats: _Optional[_Union[ClientStats, _Mapping]] = ...) -> None: ...

class ClientStats(_message.Message):
    __slots__ = ("dropped_total",)
    DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    dropped_total: int
    def __init__(self, dropped_total: _Optional[int] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ClientMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ClientMessage, _Mapping]]] = ...) -> None: ...

class SessionWelcome(_message.Message):
    __slots__ = ("committed_seq", "server_version")
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    committed_seq: int
    server_version: str
    def __init__(self, committed_seq: _Optional[int] = ..., server_version: _Optional[str] = ...) -> None: ...

class SessionAck(_message.Message):
    __slots__ = ("committed_seq",)
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    committed_seq: int
    def __init__(self, committed_seq: _Optional[int] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("seq", "code", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    code: int
    message: str
    def __init__(self, seq: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "ack", "error")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    welcome: SessionWelcome
    ack: SessionAck
    error: SessionError
    def __init__(self, welcome: _Optional[_Union[SessionWelcome, _Mapping]] = ..., ack: _Optional[_Union[SessionAck, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchSnapshotsRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class WatchActivityRequest(_message.Message):
    __slots__ = ("interval_ms", "oom_threshold_bytes")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    OOM_THRESHOLD_BYTES_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    oom_threshold_bytes: int
    def __init__(self, interval_ms: _Optional[int] = ..., oom_threshold_bytes: _Optional[int] = ...) -> None: ...

class Activity(_message.Message):
    __slots__ = ("at_ns", "snapshot", "clients", "open_runs", "more_open_runs", "recent_failures")
    AT_NS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    OPEN_RUNS_FIELD_NUMBER: _ClassVar[int]
    MORE_OPEN_RUNS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    at_ns: int
    snapshot: _resources_pb2.Snapshot
    clients: _containers.RepeatedCompositeFieldContainer[ActiveClient]
    open_runs: _containers.RepeatedCompositeFieldContainer[OpenRun]
    more_open_runs: int
    recent_failures: _containers.RepeatedCompositeFieldContainer[FailedRun]
    def __init__(self, at_ns: _Optional[int] = ..., snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ..., clients: _Optional[_Iterable[_Union[ActiveClient, _Mapping]]] = ..., open_runs: _Optional[_Iterable[_Union[OpenRun, _Mapping]]] = ..., more_open_runs: _Optional[int] = ..., recent_failures: _Optional[_Iterable[_Union[FailedRun, _Mapping]]] = ...) -> None: ...

class ActiveClient(_message.Message):
    __slots__ = ("client_id", "client_name", "pid", "last_seen_ns", "dropped_messages", "process", "clock_offset_ns", "clock_skewed")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEWED_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_name: str
    pid: int
    last_seen_ns: int
    dropped_messages: int
    process: _resources_pb2.AgentProcess
    clock_offset_ns: int
    clock_skewed: bool
    def __init__(self, client_id: _Optional[str] = ..., client_name: _Optional[str] = ..., pid: _Optional[int] = ..., last_seen_ns: _Optional[int] = ..., dropped_messages: _Optional[int] = ..., process: _Optional[_Union[_resources_pb2.AgentProcess, _Mapping]] = ..., clock_offset_ns: _Optional[int] = ..., clock_skewed: _Optional[bool] = ...) -> None: ...

class OpenRun(_message.Message):
    __slots__ = ("run_id", "name", "client_id", "started_at_ns", "open_spans", "start_gpu_free")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    OPEN_SPANS_FIELD_NUMBER: _ClassVar[int]
    START_GPU_FREE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    client_id: str
    started_at_ns: int
    open_spans: _containers.RepeatedCompositeFieldContainer[OpenSpan]
    start_gpu_free: _containers.RepeatedCompositeFieldContainer[GpuFree]
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., client_id: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., open_spans: _Optional[_Iterable[_Union[OpenSpan, _Mapping]]] = ..., start_gpu_free: _Optional[_Iterable[_Union[GpuFree, _Mapping]]] = ...) -> None: ...

class OpenSpan(_message.Message):
    __slots__ = ("span_id", "parent_span_id", "name", "started_at_ns", "start_gpu_free")
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    START_GPU_FREE_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    parent_span_id: str
    name: str
    started_at_ns: int
    start_gpu_free: _containers.RepeatedCompositeFieldContainer[GpuFree]
    def __init__(self, span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., start_gpu_free: _Optional[_Iterable[_Union[GpuFree, _Mapping]]] = ...) -> None: ...

class GpuFree(_message.Message):
    __slots__ = ("gpu_index", "memory_free_bytes")
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    gpu_index: int
    memory_free_bytes: int
    def __init__(self, gpu_index: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ...) -> None: ...

class FailedRun(_message.Message):
    __slots__ = ("run_id", "name", "error", "ended_at_ns", "gpu_free_min_bytes", "likely_oom")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_FREE_MIN_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIKELY_OOM_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    error: str
    ended_at_ns: int
    gpu_free_min_bytes: int
    likely_oom: bool
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., error: _Optional[str] = ..., ended_at_ns: _Optional[int] = ..., gpu_free_min_bytes: _Optional[int] = ..., likely_oom: _Optional[bool] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("limit", "status", "started_before_ns")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_BEFORE_NS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    status: str
    started_before_ns: int
    def __init__(self, limit: _Optional[int] = ..., status: _Optional[str] = ..., started_before_ns: _Optional[int] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "name", "status", "error", "started_at_ns", "ended_at_ns", "start_snapshot_id", "end_snapshot_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    START_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    END_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    status: str
    error: str
    started_at_ns: int
    ended_at_ns: int
    start_snapshot_id: int
    end_snapshot_id: int
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., ended_at_ns: _Optional[int] = ..., start_snapshot_id: _Optional[int] = ..., end_snapshot_id: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SpanInfo(_message.Message):
    __slots__ = ("span_id", "parent_span_id", "name", "status", "error", "started_at_ns", "ended_at_ns", "start_snapshot_id", "end_snapshot_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    START_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    END_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    parent_span_id: str
    name: str
    status: str
    error: str
    started_at_ns: int
    ended_at_ns: int
    start_snapshot_id: int
    end_snapshot_id: int
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., ended_at_ns: _Optional[int] = ..., start_snapshot_id: _Optional[int] = ..., end_snapshot_id: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run", "spans", "start_snapshot", "end_snapshot")
    RUN_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    START_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    END_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    run: RunInfo
    spans: _containers.RepeatedCompositeFieldContainer[SpanInfo]
    start_snapshot: _resources_pb2.Snapshot
    end_snapshot: _resources_pb2.Snapshot
    def __init__(self, run: _Optional[_Union[RunInfo, _Mapping]] = ..., spans: _Optional[_Iterable[_Union[SpanInfo, _Mapping]]] = ..., start_snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ..., end_snapshot: _Optional[_Union[_resources_pb2.Snapshot, _Mapping]] = ...) -> None: ...
