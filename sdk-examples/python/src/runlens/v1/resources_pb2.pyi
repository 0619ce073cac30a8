from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Snapshot(_message.Message):
    __slots__ = ("snapshot_id", "taken_at_ns", "host", "gpu_available", "gpu_unavailable_reason", "gpus", "cgroup", "agent_processes")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_NS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    GPU_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    GPU_UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    AGENT_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: int
    taken_at_ns: int
    host: HostResources
    gpu_available: bool
    gpu_unavailable_reason: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuResources]
    cgroup: CgroupResources
    agent_processes: _containers.RepeatedCompositeFieldContainer[AgentProcess]
    def __init__(self, snapshot_id: _Optional[int] = ..., taken_at_ns: _Optional[int] = ..., host: _Optional[_Union[HostResources, _Mapping]] = ..., gpu_available: _Optional[bool] = ..., gpu_unavailable_reason: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuResources, _Mapping]]] = ..., cgroup: _Optional[_Union[CgroupResources, _Mapping]] = ..., agent_processes: _Optional[_Iterable[_Union[AgentProcess, _Mapping]]] = ...) -> None: ...

class AgentProcess(_message.Message):
    __slots__ = ("pid", "process_count", "rss_bytes", "cpu_ratio", "gpu_memory_bytes", "gpus")
    PID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_RATIO_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    process_count: int
    rss_bytes: int
    cpu_ratio: float
    gpu_memory_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[AgentGpuMemory]
    def __init__(self, pid: _Optional[int] = ..., process_count: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., cpu_ratio: _Optional[float] = ..., gpu_memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[AgentGpuMemory, _Mapping]]] = ...) -> None: ...

class AgentGpuMemory(_message.Message):
    __slots__ = ("gpu_index", "used_memory_bytes")
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    gpu_index: int
    used_memory_bytes: int
    def __init__(self, gpu_index: _Optional[int] = ..., used_memory_bytes: _Optional[int] = ...) -> None: ...

class CgroupResources(_message.Message):
    __slots__ = ("version", "memory_limit_bytes", "memory_used_bytes", "cpu_quota_cores", "cpu_throttled_ns")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_THROTTLED_NS_FIELD_NUMBER: _ClassVar[int]
    version: int
    memory_limit_bytes: int
    memory_used_bytes: int
    cpu_quota_cores: float
    cpu_throttled_ns: int
    def __init__(self, version: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., cpu_quota_cores: _Optional[float] = ..., cpu_throttled_ns: _Optional[int] = ...) -> None: ...

class HostResources(_message.Message):
    __slots__ = ("cpu_load_1m", "cpu_load_5m", "cpu_load_15m", "cpu_count", "cpu_utilization_ratio", "cpu_core_utilization_ratio", "ram_total_bytes", "ram_used_bytes", "ram_available_bytes", "swap_total_bytes", "swap_used_bytes")
    CPU_LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_5M_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_15M_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    CPU_CORE_UTILIZATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_load_1m: float
    cpu_load_5m: float
    cpu_load_15m: float
    cpu_count: int
    cpu_utilization_ratio: float
    cpu_core_utilization_ratio: _containers.RepeatedScalarFieldContainer[float]
    ram_total_bytes: int
    ram_used_bytes: int
    ram_available_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    def __init__(self, cpu_load_1m: _Optional[float] = ..., cpu_load_5m: _Optional[float] = ..., cpu_load_15m: _Optional[float] = ..., cpu_count: _Optional[int] = ..., cpu_utilization_ratio: _Optional[float] = ..., cpu_core_utilization_ratio: _Optional[_Iterable[float]] = ..., ram_total_bytes: _Optional[int] = ..., ram_used_bytes: _Optional[int] = ..., ram_available_bytes: _Optional[int] = ..., swap_total_bytes: _Optional[int] = ..., swap_used_bytes: _Optional[int] = ...) -> None: ...

class GpuResources(_message.Message):
    __slots__ = ("index", "uuid", "name", "state", "memory_total_bytes", "memory_used_bytes", "memory_free_bytes", "utilization_ratio", "memory_utilization_ratio", "temperature_celsius", "power_watts", "memory_reserved_bytes", "power_limit_watts", "clock_sm_mhz", "clock_memory_mhz", "performance_state", "clock_event_reasons", "ecc_corrected_errors", "ecc_uncorrected_errors", "processes", "mig_enabled", "mig_devices", "perf")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_WATTS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SM_MHZ_FIELD_NUMBER: _ClassVar[int]
    CLOCK_MEMORY_MHZ_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_STATE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_EVENT_REASONS_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    MIG_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIG_DEVICES_FIELD_NUMBER: _ClassVar[int]
    PERF_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    state: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    utilization_ratio: float
    memory_utilization_ratio: float
    temperature_celsius: float
    power_watts: float
    memory_reserved_bytes: int
    power_limit_watts: float
    clock_sm_mhz: int
    clock_memory_mhz: int
    performance_state: int
    clock_event_reasons: int
    ecc_corrected_errors: int
    ecc_uncorrected_errors: int
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcess]
    mig_enabled: bool
    mig_devices: _containers.RepeatedCompositeFieldContainer[MigDevice]
    perf: GpuPerf
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., utilization_ratio: _Optional[float] = ..., memory_utilization_ratio: _Optional[float] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ..., memory_reserved_bytes: _Optional[int] = ..., power_limit_watts: _Optional[float] = ..., clock_sm_mhz: _Optional[int] = ..., clock_memory_mhz: _Optional[int] = ..., performance_state: _Optional[int] = ..., clock_event_reasons: _Optional[int] = ..., ecc_corrected_errors: _Optional[int] = ..., ecc_uncorrected_errors: _Optional[int] = ..., processes: _Optional[_Iterable[_Union[GpuProcess, _Mapping]]] = ..., mig_enabled: _Optional[bool] = ..., mig_devices: _Optional[_Iterable[_Union[MigDevice, _Mapping]]] = ..., perf: _Optional[_Union[GpuPerf, _Mapping]] = ...) -> None: ...

class GpuPerf(_message.Message):
    __slots__ = ("interval_seconds", "sm_active_ratio", "sm_occupancy_ratio", "tensor_active_ratio", "tensor_hmma_active_ratio", "dram_bandwidth_ratio", "fp16_active_ratio", "fp32_active_ratio", "pcie_tx_bytes_per_second", "pcie_rx_bytes_per_second", "nvlink_tx_bytes_per_second", "nvlink_rx_bytes_per_second")
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SM_ACTIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SM_OCCUPANCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    TENSOR_ACTIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    TENSOR_HMMA_ACTIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    DRAM_BANDWIDTH_RATIO_FIELD_NUMBER: _ClassVar[int]
    FP16_ACTIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    FP32_ACTIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    PCIE_TX_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PCIE_RX_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NVLINK_TX_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NVLINK_RX_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    sm_active_ratio: float
    sm_occupancy_ratio: float
    tensor_active_ratio: float
    tensor_hmma_active_ratio: float
    dram_bandwidth_ratio: float
    fp16_active_ratio: float
    fp32_active_ratio: float
    pcie_tx_bytes_per_second: float
    pcie_rx_bytes_per_second: float
    nvlink_tx_bytes_per_second: float
    nvlink_rx_bytes_per_second: float
    def __init__(self, interval_seconds: _Optional[float] = ..., sm_active_ratio: _Optional[float] = ..., sm_occupancy_ratio: _Optional[float] = ..., tensor_active_ratio: _Optional[float] = ..., tensor_hmma_active_ratio: _Optional[float] = ..., dram_bandwidth_ratio: _Optional[float] = ..., fp16_active_ratio: _Optional[float] = ..., fp32_active_ratio: _Optional[float] = ..., pcie_tx_bytes_per_second: _Optional[float] = ..., pcie_rx_bytes_per_second: _Optional[float] = ..., nvlink_tx_bytes_per_second: _Optional[float] = ..., nvlink_rx_bytes_per_second: _Optional[float] = ...) -> None: ...

class MigDevice(_message.Message):
    __slots__ = ("index", "uuid", "memory_total_bytes", "memory_used_bytes", "memory_free_bytes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ...) -> None: ...

class GpuProcess(_message.Message):
    __slots__ = ("pid", "used_memory_bytes", "pod_uid", "container_id")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_memory_bytes: int
    pod_uid: str
    container_id: str
    def __init__(self, pid: _Optional[int] = ..., used_memory_bytes: _Optional[int] = ..., pod_uid: _Optional[str] = ..., container_id: _Optional[str] = ...) -> None: ...
