from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_RAW: _ClassVar[Codec]
    CODEC_SPARSE: _ClassVar[Codec]
    CODEC_ENTROPY: _ClassVar[Codec]
CODEC_UNSPECIFIED: Codec
CODEC_RAW: Codec
CODEC_SPARSE: Codec
CODEC_ENTROPY: Codec

class SpikeFrame(_message.Message):
    __slots__ = ("request_id", "model_fingerprint", "split_point", "shape", "codec", "payload", "fec_parity_bytes", "lost_bytes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FEC_PARITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_fingerprint: str
    split_point: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    codec: Codec
    payload: bytes
    fec_parity_bytes: int
    lost_bytes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., split_point: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., codec: _Optional[_Union[Codec, str]] = ..., payload: _Optional[bytes] = ..., fec_parity_bytes: _Optional[int] = ..., lost_bytes: _Optional[_Iterable[int]] = ...) -> None: ...

class EdgeTiming(_message.Message):
    __slots__ = ("decode_ms", "inference_ms", "total_ms", "queue_ms", "batch_images")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_IMAGES_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    inference_ms: float
    total_ms: float
    queue_ms: float
    batch_images: int
    def __init__(self, decode_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., batch_images: _Optional[int] = ...) -> None: ...

class LinkDamage(_message.Message):
    __slots__ = ("fec_corrected_bytes", "fec_failed_blocks", "chunks", "erased_chunks", "erased_chunk_indices")
    FEC_CORRECTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FEC_FAILED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERASED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERASED_CHUNK_INDICES_FIELD_NUMBER: _ClassVar[int]
    fec_corrected_bytes: int
    fec_failed_blocks: int
    chunks: int
    erased_chunks: int
    erased_chunk_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, fec_corrected_bytes: _Optional[int] = ..., fec_failed_blocks: _Optional[int] = ..., chunks: _Optional[int] = ..., erased_chunks: _Optional[int] = ..., erased_chunk_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class Logits(_message.Message):
    __slots__ = ("request_id", "batch_size", "num_classes", "values", "timing", "model_fingerprint", "damage", "served_by")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DAMAGE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    batch_size: int
    num_classes: int
    values: _containers.RepeatedScalarFieldContainer[float]
    timing: EdgeTiming
    model_fingerprint: str
    damage: LinkDamage
    served_by: str
    def __init__(self, request_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., timing: _Optional[_Union[EdgeTiming, _Mapping]] = ..., model_fingerprint: _Optional[str] = ..., damage: _Optional[_Union[LinkDamage, _Mapping]] = ..., served_by: _Optional[str] = ...) -> None: ...

class SpikeStep(_message.Message):
    __slots__ = ("request_id", "model_fingerprint", "split_point", "shape", "fec_parity_bytes", "codec", "step", "payload", "lost_bytes", "fresh_chunks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    FEC_PARITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRESH_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_fingerprint: str
    split_point: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    fec_parity_bytes: int
    codec: Codec
    step: int
    payload: bytes
    lost_bytes: _containers.RepeatedScalarFieldContainer[int]
    fresh_chunks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., split_point: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., fec_parity_bytes: _Optional[int] = ..., codec: _Optional[_Union[Codec, str]] = ..., step: _Optional[int] = ..., payload: _Optional[bytes] = ..., lost_bytes: _Optional[_Iterable[int]] = ..., fresh_chunks: _Optional[_Iterable[int]] = ...) -> None: ...

class RunningLogits(_message.Message):
    __slots__ = ("request_id", "step", "batch_size", "num_classes", "values", "decode_ms", "inference_ms", "damage", "model_fingerprint")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    DAMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    step: int
    batch_size: int
    num_classes: int
    values: _containers.RepeatedScalarFieldContainer[float]
    decode_ms: float
    inference_ms: float
    damage: LinkDamage
    model_fingerprint: str
    def __init__(self, request_id: _Optional[str] = ..., step: _Optional[int] = ..., batch_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., decode_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., damage: _Optional[_Union[LinkDamage, _Mapping]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_fingerprint", "split_point", "spike_shape", "num_classes", "trained", "arch", "split_point_name", "models", "inference_ms")
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    SPIKE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    model_fingerprint: str
    split_point: int
    spike_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    trained: bool
    arch: str
    split_point_name: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    inference_ms: float
    def __init__(self, model_fingerprint: _Optional[str] = ..., split_point: _Optional[int] = ..., spike_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., trained: _Optional[bool] = ..., arch: _Optional[str] = ..., split_point_name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., inference_ms: _Optional[float] = ...) -> None: ...
