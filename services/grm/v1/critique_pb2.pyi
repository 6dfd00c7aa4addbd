from grm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CritiqueRequest(_message.Message):
    __slots__ = ("query", "turns", "responses", "specs", "sampling", "request_id", "vote_in_ms", "reference")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_IN_MS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    query: str
    turns: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatTurn]
    responses: _containers.RepeatedScalarFieldContainer[str]
    specs: _containers.RepeatedCompositeFieldContainer[_common_pb2.SampleSpec]
    sampling: _common_pb2.SamplingParams
    request_id: str
    vote_in_ms: int
    reference: str
    def __init__(self, query: _Optional[str] = ..., turns: _Optional[_Iterable[_Union[_common_pb2.ChatTurn, _Mapping]]] = ..., responses: _Optional[_Iterable[str]] = ..., specs: _Optional[_Iterable[_Union[_common_pb2.SampleSpec, _Mapping]]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., vote_in_ms: _Optional[int] = ..., reference: _Optional[str] = ...) -> None: ...

class CritiqueResponse(_message.Message):
    __slots__ = ("samples", "load", "model")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    load: _common_pb2.SamplerLoad
    model: _common_pb2.ModelInfo
    def __init__(self, samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ..., load: _Optional[_Union[_common_pb2.SamplerLoad, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class CritiqueUpdate(_message.Message):
    __slots__ = ("samples", "load", "model")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    load: _common_pb2.SamplerLoad
    model: _common_pb2.ModelInfo
    def __init__(self, samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ..., load: _Optional[_Union[_common_pb2.SamplerLoad, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChannelRequest(_message.Message):
    __slots__ = ("jobs", "cancel")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ChannelJob]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, jobs: _Optional[_Iterable[_Union[ChannelJob, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ...) -> None: ...

class ChannelJob(_message.Message):
    __slots__ = ("id", "request", "timeout_ms", "trace", "whole")
    class TraceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    WHOLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: CritiqueRequest
    timeout_ms: int
    trace: _containers.ScalarMap[str, str]
    whole: bool
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[CritiqueRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., trace: _Optional[_Mapping[str, str]] = ..., whole: _Optional[bool] = ...) -> None: ...

class ChannelUpdate(_message.Message):
    __slots__ = ("jobs", "load", "model")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobUpdate]
    load: _common_pb2.SamplerLoad
    model: _common_pb2.ModelInfo
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobUpdate, _Mapping]]] = ..., load: _Optional[_Union[_common_pb2.SamplerLoad, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class JobUpdate(_message.Message):
    __slots__ = ("id", "samples", "done", "error_code", "error_message", "error_field")
    ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_FIELD_NUMBER: _ClassVar[int]
    id: int
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    done: bool
    error_code: int
    error_message: str
    error_field: str
    def __init__(self, id: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ..., done: _Optional[bool] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., error_field: _Optional[str] = ...) -> None: ...
