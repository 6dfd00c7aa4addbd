from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_GREEDY: _ClassVar[Aggregation]
    AGGREGATION_VOTE: _ClassVar[Aggregation]
    AGGREGATION_META_VOTE: _ClassVar[Aggregation]

class PrincipleMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRINCIPLE_MODE_UNSPECIFIED: _ClassVar[PrincipleMode]
    PRINCIPLE_MODE_JOINT: _ClassVar[PrincipleMode]
    PRINCIPLE_MODE_SEPARATE: _ClassVar[PrincipleMode]
    PRINCIPLE_MODE_SEPARATE_QUERY: _ClassVar[PrincipleMode]
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_GREEDY: Aggregation
AGGREGATION_VOTE: Aggregation
AGGREGATION_META_VOTE: Aggregation
PRINCIPLE_MODE_UNSPECIFIED: PrincipleMode
PRINCIPLE_MODE_JOINT: PrincipleMode
PRINCIPLE_MODE_SEPARATE: PrincipleMode
PRINCIPLE_MODE_SEPARATE_QUERY: PrincipleMode

class ChatTurn(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "max_new_tokens", "grammar", "force_scores")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRAMMAR_FIELD_NUMBER: _ClassVar[int]
    FORCE_SCORES_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_new_tokens: int
    grammar: bool
    force_scores: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., grammar: _Optional[bool] = ..., force_scores: _Optional[bool] = ...) -> None: ...

class SampleSpec(_message.Message):
    __slots__ = ("index", "attempt", "seed", "order", "principles")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    index: int
    attempt: int
    seed: int
    order: _containers.RepeatedScalarFieldContainer[int]
    principles: str
    def __init__(self, index: _Optional[int] = ..., attempt: _Optional[int] = ..., seed: _Optional[int] = ..., order: _Optional[_Iterable[int]] = ..., principles: _Optional[str] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("spec", "text", "principles", "critique", "scores", "valid", "invalid_reason", "meta_score", "used_in_vote", "tokens_generated", "latency_ms", "finish_reason", "backend_seed", "sampler")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    INVALID_REASON_FIELD_NUMBER: _ClassVar[int]
    META_SCORE_FIELD_NUMBER: _ClassVar[int]
    USED_IN_VOTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_GENERATED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_SEED_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    spec: SampleSpec
    text: str
    principles: str
    critique: str
    scores: _containers.RepeatedScalarFieldContainer[int]
    valid: bool
    invalid_reason: str
    meta_score: float
    used_in_vote: bool
    tokens_generated: int
    latency_ms: float
    finish_reason: str
    backend_seed: int
    sampler: str
    def __init__(self, spec: _Optional[_Union[SampleSpec, _Mapping]] = ..., text: _Optional[str] = ..., principles: _Optional[str] = ..., critique: _Optional[str] = ..., scores: _Optional[_Iterable[int]] = ..., valid: _Optional[bool] = ..., invalid_reason: _Optional[str] = ..., meta_score: _Optional[float] = ..., used_in_vote: _Optional[bool] = ..., tokens_generated: _Optional[int] = ..., latency_ms: _Optional[float] = ..., finish_reason: _Optional[str] = ..., backend_seed: _Optional[int] = ..., sampler: _Optional[str] = ...) -> None: ...

class SamplerLoad(_message.Message):
    __slots__ = ("in_flight", "queued", "capacity")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    queued: int
    capacity: int
    def __init__(self, in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "revision", "backend", "template_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    revision: str
    backend: str
    template_version: str
    def __init__(self, model_id: _Optional[str] = ..., revision: _Optional[str] = ..., backend: _Optional[str] = ..., template_version: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("model", "load")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    load: SamplerLoad
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., load: _Optional[_Union[SamplerLoad, _Mapping]] = ...) -> None: ...
