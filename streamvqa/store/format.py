"""Versioned binary format of one stored block (the bytes every tier holds).

Layout (little-endian)::

    0   magic        4s   b"SVQB"
    4   version      u16  FORMAT_VERSION
    6   flags        u16  0 (reserved)
    8   header_len   u32  length of the JSON header
    12  payload_len  u64  length of the payload (sections plus their alignment padding)
    20  crc32        u32  zlib.crc32 over bytes [0, 20) and [24, end): everything but itself
    24  header       JSON (utf-8): stream id, unit index, time range, positions, layers, dtype,
                     quantization, fingerprint, JSON meta, and the section table
    ..  zero padding up to a multiple of ALIGN
    P   payload      sections, each starting at a multiple of ALIGN from P

Sections, in this order: ``rep_keys``, ``positions``, one ``meta.<name>`` per tensor-valued meta
entry, ``keys``, ``values``. The small ones come first so an index can be rebuilt from the first
few KiB of a block (`read_header` + `decode_section`) without reading its keys and values.

The checksum is verified on every `decode`; any mismatch, truncation, bad magic or unknown
version raises `CorruptBlockError`. Decoding is zero-copy (`torch.frombuffer`) when the buffer
is writable and ``copy=False``; tensors then alias the buffer, which must outlive them.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from streamvqa.store.block import Block
from streamvqa.store.errors import CorruptBlockError, UnsupportedVersionError
from streamvqa.store.quant import dequantize, parse_scheme, quantize

MAGIC = b"SVQB"
FORMAT_VERSION = 1
ALIGN = 64
_FIXED = struct.Struct("<4sHHIQI")
FIXED_SIZE = _FIXED.size  # 24
_CRC_OFFSET = 20

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_META_TENSOR = "meta."


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} is not supported by the block format") from None


@dataclass(frozen=True)
class Section:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the payload start
    nbytes: int


@dataclass(frozen=True)
class BlockHeader:
    """Everything about a block except its tensor bytes."""

    version: int
    stream_id: str
    index: int
    t_start: float
    t_end: float
    pos_start: int
    pos_end: int
    layers: int
    dtype: str
    quantization: str
    fingerprint: str
    meta: dict
    sections: dict[str, Section]
    payload_start: int
    payload_len: int

    @property
    def size(self) -> int:
        """Total encoded length in bytes."""
        return self.payload_start + self.payload_len


def _flat_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype != torch.uint8 else t


@dataclass
class EncodedBlock:
    """A block laid out for writing: `size` bytes, written by `write_into` without temporaries."""

    header: bytes
    sections: list[tuple[torch.Tensor, int]]  # (flat uint8 tensor, absolute offset)
    payload_start: int
    payload_len: int
    _crc: int | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.payload_start + self.payload_len

    def write_into(self, buf: memoryview | bytearray) -> int:
        """Write the whole encoded block into ``buf[:size]`` (e.g. a shared-memory segment)."""
        mv = memoryview(buf).cast("B")
        if len(mv) < self.size:
            raise ValueError(f"buffer of {len(mv)} bytes is smaller than the block ({self.size})")
        fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(self.header), self.payload_len, 0)
        mv[:FIXED_SIZE] = fixed
        end = FIXED_SIZE + len(self.header)
        mv[FIXED_SIZE:end] = self.header
        for src, offset in self.sections:
            if end < offset:
                mv[end:offset] = bytes(offset - end)
            n = src.numel()
            if n:
                torch.frombuffer(mv, dtype=torch.uint8, count=n, offset=offset).copy_(src)
            end = offset + n
        if end < self.size:
            mv[end : self.size] = bytes(self.size - end)
        crc = zlib.crc32(mv[:_CRC_OFFSET])
        crc = zlib.crc32(mv[FIXED_SIZE : self.size], crc)
        struct.pack_into("<I", mv, _CRC_OFFSET, crc)
        self._crc = crc
        return self.size

    def to_bytes(self) -> bytearray:
        out = bytearray(self.size)
        self.write_into(out)
        return out


def _json_default(o: Any) -> Any:
    """numpy scalars (and anything else with a scalar `.item()`) become plain JSON numbers."""
    if getattr(o, "ndim", None) == 0 and hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def plan(block: Block, fingerprint: str = "", quantization: str = "none") -> EncodedBlock:
    """Lay out `block` (tensors may live on any device; they are copied to CPU if needed).

    ``quantization="int8-g64"`` stores keys/values as int8 groups + scales (lossy, see `quant`);
    sections are then ``keys.q``/``keys.scale`` and ``values.q``/``values.scale``.
    """
    group = parse_scheme(quantization)
    tensors: list[tuple[str, torch.Tensor]] = [("rep_keys", block.rep_keys), ("positions", block.positions)]
    meta_json: dict[str, Any] = {}
    for k, v in (block.meta or {}).items():
        if isinstance(v, torch.Tensor):
            tensors.append((_META_TENSOR + str(k), v))
        else:
            meta_json[k] = v
    if group is None:
        tensors += [("keys", block.keys), ("values", block.values)]
    else:
        for name, t in (("keys", block.keys), ("values", block.values)):
            q, scale = quantize(t, group)
            tensors += [(name + ".scale", scale), (name + ".q", q)]

    table, flats, offset = [], [], 0
    for name, t in tensors:
        flat = _flat_bytes(t)
        table.append(
            {
                "name": name,
                "dtype": dtype_name(t.dtype),
                "shape": list(t.shape),
                "offset": offset,
                "nbytes": flat.numel(),
            }
        )
        flats.append((flat, offset))
        offset = _align(offset + flat.numel())
    payload_len = offset
    header = {
        "stream_id": block.stream_id,
        "index": int(block.index),
        "t_start": float(block.t_start),
        "t_end": float(block.t_end),
        "pos_start": int(block.pos_start),
        "pos_end": int(block.pos_end),
        "layers": int(block.keys.shape[0]) if block.keys.dim() else 0,
        "dtype": dtype_name(block.keys.dtype),
        "quantization": quantization,
        "fingerprint": fingerprint,
        "meta": meta_json,
        "sections": table,
    }
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"block meta must be JSON-serialisable or tensors: {e}") from e
    payload_start = _align(FIXED_SIZE + len(header_bytes))
    return EncodedBlock(header_bytes, [(f, payload_start + o) for f, o in flats], payload_start, payload_len)


def encode(block: Block, fingerprint: str = "", quantization: str = "none") -> bytearray:
    """Encode a block into a fresh buffer."""
    return plan(block, fingerprint, quantization).to_bytes()


def encoded_size(block: Block, fingerprint: str = "", quantization: str = "none") -> int:
    return plan(block, fingerprint, quantization).size


def transcode(buf: bytes | bytearray | memoryview, quantization: str) -> bytes | bytearray | memoryview:
    """Re-encode a verified block with another quantization (returns `buf` itself if unchanged).
    Quantized blocks are never expanded back: asking for "none" keeps them as they are."""
    header = read_header(buf)
    if quantization == "none" or header.quantization == quantization:
        return buf
    return encode(decode(buf), header.fingerprint, quantization)


def _parse_fixed(mv: memoryview) -> tuple[int, int, int]:
    if len(mv) < FIXED_SIZE:
        raise CorruptBlockError(f"truncated block: {len(mv)} bytes, fixed header needs {FIXED_SIZE}")
    magic, version, _flags, header_len, payload_len, crc = _FIXED.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CorruptBlockError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"block format version {version}; this build reads version {FORMAT_VERSION}"
        )
    return header_len, payload_len, crc


def read_header(buf: bytes | bytearray | memoryview) -> BlockHeader:
    """Parse the fixed part and JSON header (no checksum check: use `decode` for that).

    `buf` must hold at least the first ``FIXED_SIZE + header_len`` bytes of the block.
    """
    mv = memoryview(buf).cast("B")
    header_len, payload_len, _crc = _parse_fixed(mv)
    if len(mv) < FIXED_SIZE + header_len:
        raise CorruptBlockError(f"truncated block header: {len(mv)} bytes, need {FIXED_SIZE + header_len}")
    try:
        h = json.loads(bytes(mv[FIXED_SIZE : FIXED_SIZE + header_len]))
        sections = {}
        for s in h["sections"]:
            sec = Section(
                s["name"], s["dtype"], tuple(int(x) for x in s["shape"]), int(s["offset"]), int(s["nbytes"])
            )
            dtype = _DTYPES[sec.dtype]
            numel = 1
            for d in sec.shape:
                numel *= d
            if (
                numel * dtype.itemsize != sec.nbytes
                or sec.offset < 0
                or sec.offset + sec.nbytes > payload_len
            ):
                raise CorruptBlockError(f"section {sec.name} is inconsistent with its shape or the payload")
            sections[sec.name] = sec
        if str(h["dtype"]) not in _DTYPES:
            raise CorruptBlockError(f"unknown dtype {h['dtype']!r}")
        quant = str(h["quantization"])
        try:
            quantized = parse_scheme(quant) is not None
        except ValueError as e:
            raise CorruptBlockError(str(e)) from None
        kv = ("keys.q", "keys.scale", "values.q", "values.scale") if quantized else ("keys", "values")
        for required in (*kv, "positions", "rep_keys"):
            if required not in sections:
                raise CorruptBlockError(f"section {required!r} missing")
        return BlockHeader(
            version=FORMAT_VERSION,
            stream_id=str(h["stream_id"]),
            index=int(h["index"]),
            t_start=float(h["t_start"]),
            t_end=float(h["t_end"]),
            pos_start=int(h["pos_start"]),
            pos_end=int(h["pos_end"]),
            layers=int(h["layers"]),
            dtype=str(h["dtype"]),
            quantization=str(h["quantization"]),
            fingerprint=str(h.get("fingerprint", "")),
            meta=dict(h.get("meta", {})),
            sections=sections,
            payload_start=_align(FIXED_SIZE + header_len),
            payload_len=int(payload_len),
        )
    except CorruptBlockError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CorruptBlockError(f"unreadable block header: {e!r}") from e


def verify(buf: bytes | bytearray | memoryview) -> BlockHeader:
    """Check length and checksum of a complete encoded block; return its header."""
    mv = memoryview(buf).cast("B")
    header = read_header(mv)
    if len(mv) < header.size:
        raise CorruptBlockError(f"truncated block: {len(mv)} bytes, header says {header.size}")
    if len(mv) > header.size:
        raise CorruptBlockError(f"trailing bytes: {len(mv)} bytes, header says {header.size}")
    _, _, crc = _parse_fixed(mv)
    actual = zlib.crc32(mv[FIXED_SIZE : header.size], zlib.crc32(mv[:_CRC_OFFSET]))
    if actual != crc:
        raise CorruptBlockError(f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x})")
    return header


def decode_section(
    buf: bytes | bytearray | memoryview, header: BlockHeader, name: str, *, copy: bool = True
) -> torch.Tensor:
    """One tensor of a block; `buf` starts at the block start and must cover that section."""
    sec = header.sections[name]
    mv = memoryview(buf).cast("B")
    start = header.payload_start + sec.offset
    if len(mv) < start + sec.nbytes:
        raise CorruptBlockError(
            f"truncated block: section {name} ends at {start + sec.nbytes}, have {len(mv)}"
        )
    dtype = _DTYPES[sec.dtype]
    if sec.nbytes == 0:
        return torch.empty(sec.shape, dtype=dtype)
    src = mv[start : start + sec.nbytes]
    if copy or mv.readonly:
        src = bytearray(src)
    return torch.frombuffer(src, dtype=dtype).reshape(sec.shape)


def decode(
    buf: bytes | bytearray | memoryview,
    *,
    expect_fingerprint: str | None = None,
    copy: bool | None = None,
    check: bool = True,
) -> Block:
    """Decode (and by default verify) a block.

    copy=None copies only when the buffer is read-only (e.g. `bytes`); copy=False on a writable
    buffer returns tensors aliasing it; copy=True always returns tensors owning their memory (use
    it for buffers that will be freed, like a shared-memory segment about to be evicted).
    """
    mv = memoryview(buf).cast("B")
    header = verify(mv) if check else read_header(mv)
    if expect_fingerprint is not None and header.fingerprint != expect_fingerprint:
        raise CorruptBlockError(
            f"block written by model {header.fingerprint!r}, expected {expect_fingerprint!r}"
        )
    if copy is None:
        copy = mv.readonly
    if copy:  # one copy of the whole payload, then zero-copy views into it
        mv = memoryview(bytearray(mv[: header.size]))
    tensors = {name: decode_section(mv, header, name, copy=False) for name in header.sections}
    if header.quantization != "none":
        dtype = _DTYPES[header.dtype]
        for name in ("keys", "values"):
            tensors[name] = dequantize(tensors.pop(name + ".q"), tensors.pop(name + ".scale"), dtype)
    meta = dict(header.meta)
    for name, t in tensors.items():
        if name.startswith(_META_TENSOR):
            meta[name[len(_META_TENSOR) :]] = t
    return Block(
        stream_id=header.stream_id,
        index=header.index,
        t_start=header.t_start,
        t_end=header.t_end,
        keys=tensors["keys"],
        values=tensors["values"],
        positions=tensors["positions"],
        pos_start=header.pos_start,
        pos_end=header.pos_end,
        rep_keys=tensors["rep_keys"],
        meta=meta,
    )
