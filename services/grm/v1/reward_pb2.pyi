from grm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_STATUS_UNSPECIFIED: _ClassVar[ScoreStatus]
    SCORE_STATUS_COMPLETE: _ClassVar[ScoreStatus]
    SCORE_STATUS_PARTIAL: _ClassVar[ScoreStatus]
    SCORE_STATUS_DEGRADED: _ClassVar[ScoreStatus]
SCORE_STATUS_UNSPECIFIED: ScoreStatus
SCORE_STATUS_COMPLETE: ScoreStatus
SCORE_STATUS_PARTIAL: ScoreStatus
SCORE_STATUS_DEGRADED: ScoreStatus

class ScoreRequest(_message.Message):
    __slots__ = ("query", "turns", "responses", "k", "k_meta", "aggregation", "latency_budget_ms", "principles", "principle_mode", "sampling", "seed", "include_samples", "request_id", "reference")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    K_META_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLE_MODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    query: str
    turns: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatTurn]
    responses: _containers.RepeatedScalarFieldContainer[str]
    k: int
    k_meta: int
    aggregation: _common_pb2.Aggregation
    latency_budget_ms: int
    principles: str
    principle_mode: _common_pb2.PrincipleMode
    sampling: _common_pb2.SamplingParams
    seed: int
    include_samples: bool
    request_id: str
    reference: str
    def __init__(self, query: _Optional[str] = ..., turns: _Optional[_Iterable[_Union[_common_pb2.ChatTurn, _Mapping]]] = ..., responses: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., k_meta: _Optional[int] = ..., aggregation: _Optional[_Union[_common_pb2.Aggregation, str]] = ..., latency_budget_ms: _Optional[int] = ..., principles: _Optional[str] = ..., principle_mode: _Optional[_Union[_common_pb2.PrincipleMode, str]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ..., include_samples: _Optional[bool] = ..., request_id: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("total_ms", "principles_ms", "sampling_ms", "meta_ms")
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_MS_FIELD_NUMBER: _ClassVar[int]
    META_MS_FIELD_NUMBER: _ClassVar[int]
    total_ms: float
    principles_ms: float
    sampling_ms: float
    meta_ms: float
    def __init__(self, total_ms: _Optional[float] = ..., principles_ms: _Optional[float] = ..., sampling_ms: _Optional[float] = ..., meta_ms: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("rewards", "votes", "k_requested", "k_used", "k_valid", "invalid_samples", "status", "status_detail", "best", "tie", "aggregation", "samples", "timings", "model", "request_id", "k_planned", "cache", "budget_met")
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    K_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    K_USED_FIELD_NUMBER: _ClassVar[int]
    K_VALID_FIELD_NUMBER: _ClassVar[int]
    INVALID_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_DETAIL_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    TIE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    K_PLANNED_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MET_FIELD_NUMBER: _ClassVar[int]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    votes: _containers.RepeatedScalarFieldContainer[int]
    k_requested: int
    k_used: int
    k_valid: int
    invalid_samples: int
    status: ScoreStatus
    status_detail: str
    best: _containers.RepeatedScalarFieldContainer[int]
    tie: bool
    aggregation: _common_pb2.Aggregation
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    timings: Timings
    model: _common_pb2.ModelInfo
    request_id: str
    k_planned: int
    cache: CacheUsage
    budget_met: bool
    def __init__(self, rewards: _Optional[_Iterable[float]] = ..., votes: _Optional[_Iterable[int]] = ..., k_requested: _Optional[int] = ..., k_used: _Optional[int] = ..., k_valid: _Optional[int] = ..., invalid_samples: _Optional[int] = ..., status: _Optional[_Union[ScoreStatus, str]] = ..., status_detail: _Optional[str] = ..., best: _Optional[_Iterable[int]] = ..., tie: _Optional[bool] = ..., aggregation: _Optional[_Union[_common_pb2.Aggregation, str]] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., request_id: _Optional[str] = ..., k_planned: _Optional[int] = ..., cache: _Optional[_Union[CacheUsage, _Mapping]] = ..., budget_met: _Optional[bool] = ...) -> None: ...

class CacheUsage(_message.Message):
    __slots__ = ("result_hit", "samples_reused", "samples_generated", "principles_reused", "principles_generated")
    RESULT_HIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_REUSED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_REUSED_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    result_hit: bool
    samples_reused: int
    samples_generated: int
    principles_reused: int
    principles_generated: int
    def __init__(self, result_hit: _Optional[bool] = ..., samples_reused: _Optional[int] = ..., samples_generated: _Optional[int] = ..., principles_reused: _Optional[int] = ..., principles_generated: _Optional[int] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class ScoreBatchItem(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: ScoreResponse
    error: ItemError
    def __init__(self, result: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoreBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoreBatchItem, _Mapping]]] = ...) -> None: ...
