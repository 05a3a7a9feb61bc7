"""Initializer storage: inside model.onnx, or streamed to model.onnx.data when the weights pass protobuf's 2 GB limit.

In external mode every tensor is appended to the data file as soon as it is made (64-byte aligned, so ORT can use the
bytes in place) and only its location is kept in the proto: the model never exists twice in memory.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

log = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 1                 # a ModelProto cannot serialise beyond 2 GiB
EXTERNAL_THRESHOLD = 2**31 - 2**27         # leave 128 MiB of headroom for the graph itself
DATA_SUFFIX = ".data"
ALIGN = 64


def needs_external_data(initializer_bytes: int, threshold: int = EXTERNAL_THRESHOLD) -> bool:
    return initializer_bytes > threshold


class TensorSink:
    """Collects initializers; with `data_file` set, writes their bytes there and keeps only references."""

    def __init__(self, data_file: Path | None = None):
        self.initializers: list[TensorProto] = []
        self.data_file = data_file
        self._fh = data_file.open("wb") if data_file is not None else None
        self.total_bytes = 0

    def add(self, name: str, array: np.ndarray, dtype: int | None = None) -> None:
        """`dtype` overrides the ONNX element type of the raw bytes (bf16 data travels as uint16 in numpy)."""
        array = np.ascontiguousarray(array)
        dtype = helper.np_dtype_to_tensor_dtype(array.dtype) if dtype is None else dtype
        self.total_bytes += array.nbytes
        if self._fh is None or array.nbytes < 1024:  # small tensors stay inline: shapes and constants
            self.initializers.append(helper.make_tensor(name, dtype, array.shape, array.tobytes(), raw=True))
            return
        pad = -self._fh.tell() % ALIGN
        if pad:
            self._fh.write(b"\0" * pad)
        offset = self._fh.tell()
        self._fh.write(memoryview(array).cast("B"))
        t = TensorProto(name=name, data_type=dtype, dims=list(array.shape))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.data_file.name), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(t)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def save_model(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write model.onnx (its data file, if any, is already written by the sink); returns the files of the model."""
    size = model.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise ValueError(f"the graph is {size} bytes even with external data; the protobuf limit is {PROTOBUF_LIMIT}")
    path.write_bytes(model.SerializeToString())
    files = [path.name]
    data = path.with_name(path.name + DATA_SUFFIX)
    if data.exists():
        files.append(data.name)
    return files
