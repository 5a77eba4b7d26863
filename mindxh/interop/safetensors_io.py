"""Read and write `.safetensors` files with bf16, in numpy, without torch.

The safetensors library's numpy API refuses BF16 (numpy has no such dtype), and most
published checkpoints are BF16. The format is simple (8-byte header length, a JSON header of
name -> dtype/shape/byte offsets, then raw little-endian bytes), so this module reads it
directly: BF16 is the top half of an IEEE float32, so `uint16 << 16` viewed as float32 is
exact. Writing rounds float32 to BF16 to nearest-even, as torch does.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from mindxh.errors import MindxhError


class SafetensorsError(MindxhError, ValueError):
    """A `.safetensors` file that is damaged or holds a dtype that cannot be read here."""


_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
_FLOAT = ("F64", "F32", "F16", "BF16")
DTYPE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # writer's choices
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | Path) -> tuple[dict, dict[str, str], int]:
    """(tensor entries by name, `__metadata__`, byte offset of the data section)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise SafetensorsError(f"{path}: too short to be a safetensors file")
            (size,) = struct.unpack("<Q", head)
            if size > _MAX_HEADER:
                raise SafetensorsError(f"{path}: header of {size} bytes; not a safetensors file")
            header = json.loads(f.read(size).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, SafetensorsError):
            raise
        raise SafetensorsError(f"{path}: unreadable safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    return header, meta, 8 + size


def read_tensors(path: str | Path, names=None) -> dict[str, np.ndarray]:
    """Tensors of `path` (all, or `names`), float dtypes widened to float32."""
    path = Path(path)
    header, _, start = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name in (header if names is None else names):
        entry = header.get(name)
        if entry is None:
            raise SafetensorsError(f"{path}: no tensor '{name}'")
        out[name] = _decode(path, name, entry, data, start)
    return out


def _decode(path: Path, name: str, entry: dict, data: np.ndarray, start: int) -> np.ndarray:
    dtype, shape = entry.get("dtype"), tuple(entry.get("shape", ()))
    if dtype not in _NUMPY:
        raise SafetensorsError(f"{path}: tensor '{name}' has dtype {dtype}, which mindxh cannot "
                               f"read (supported: {', '.join(_NUMPY)})")
    begin, end = (start + int(o) for o in entry["data_offsets"])
    itemsize = np.dtype(_NUMPY[dtype]).itemsize
    count = int(np.prod(shape, dtype=np.int64))
    if end > data.size or end - begin != count * itemsize:
        raise SafetensorsError(f"{path}: tensor '{name}' ({dtype} {list(shape)}) does not fit its "
                               "byte range; the file is truncated or damaged")
    raw = np.frombuffer(data, dtype=_NUMPY[dtype], count=count, offset=begin).reshape(shape)
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in _FLOAT:
        return raw.astype(np.float32)
    return np.array(raw)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bit patterns (uint16), rounded to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    bits[np.isnan(x)] = 0x7FC0
    return bits


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], dtype: str = "float32",
                  metadata: dict[str, str] | None = None) -> None:
    """Write float tensors as `dtype` (float32, float16 or bfloat16), names sorted."""
    code = DTYPE_CODES[dtype]
    header: dict = {"__metadata__": dict(metadata or {})}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], dtype=np.float32)
        if code == "BF16":
            blob = to_bf16_bits(arr).tobytes()
        else:
            wide = np.float16 if code == "F16" else np.float32
            blob = np.ascontiguousarray(arr, dtype=wide).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


__all__ = ["DTYPE_CODES", "SafetensorsError", "read_header", "read_tensors", "to_bf16_bits",
           "write_tensors"]
