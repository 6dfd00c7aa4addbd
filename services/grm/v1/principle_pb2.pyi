from grm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrincipleRequest(_message.Message):
    __slots__ = ("query", "turns", "responses", "n", "seed", "sampling", "reference")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    query: str
    turns: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatTurn]
    responses: _containers.RepeatedScalarFieldContainer[str]
    n: int
    seed: int
    sampling: _common_pb2.SamplingParams
    reference: str
    def __init__(self, query: _Optional[str] = ..., turns: _Optional[_Iterable[_Union[_common_pb2.ChatTurn, _Mapping]]] = ..., responses: _Optional[_Iterable[str]] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class PrincipleSet(_message.Message):
    __slots__ = ("text", "seed", "tokens_generated", "latency_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_GENERATED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    seed: int
    tokens_generated: int
    latency_ms: float
    def __init__(self, text: _Optional[str] = ..., seed: _Optional[int] = ..., tokens_generated: _Optional[int] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class PrincipleResponse(_message.Message):
    __slots__ = ("sets", "model")
    SETS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    sets: _containers.RepeatedCompositeFieldContainer[PrincipleSet]
    model: _common_pb2.ModelInfo
    def __init__(self, sets: _Optional[_Iterable[_Union[PrincipleSet, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
