import struct

import pytest
import torch

from streamvqa.store import format as fmt
from streamvqa.store.errors import CorruptBlockError, UnsupportedVersionError
from tests.store.helpers import assert_same_block, make_block


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rope_rows", [1, 3])
def test_round_trip_exact(dtype, rope_rows):
    block = make_block(3, dtype=dtype, rope_rows=rope_rows)
    buf = fmt.encode(block, fingerprint="m1")
    out = fmt.decode(buf, expect_fingerprint="m1")
    assert_same_block(block, out)
    assert out.keys.dtype == dtype and out.positions.shape == (rope_rows, block.n_tokens)


def test_round_trip_bytes_and_zero_copy():
    block = make_block(1, dtype=torch.bfloat16)
    buf = fmt.encode(block)
    assert_same_block(block, fmt.decode(bytes(buf)))  # read-only input → copied
    aliased = fmt.decode(buf, copy=False)  # writable input → tensors alias the buffer
    header = fmt.read_header(buf)
    off = header.payload_start + header.sections["keys"].offset
    buf[off] ^= 0xFF
    assert not torch.equal(aliased.keys, block.keys)


def test_special_values_meta_tensors_and_empty_block():
    block = make_block(
        0, dtype=torch.float32, meta={"caption": "a dog", "emb": torch.arange(5.0), "summary": True}
    )
    block.keys[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])
    block.t_end = float("inf")
    out = fmt.decode(fmt.encode(block))
    assert torch.equal(out.keys.view(torch.int32), block.keys.view(torch.int32))  # NaN bit pattern kept
    assert out.meta["caption"] == "a dog" and out.meta["summary"] is True
    assert torch.equal(out.meta["emb"], torch.arange(5.0))
    empty = make_block(2, tokens=0)
    assert_same_block(empty, fmt.decode(fmt.encode(empty)))


def test_write_into_memoryview_matches_encode():
    block = make_block(4)
    planned = fmt.plan(block, "fp")
    target = bytearray(planned.size + 100)
    assert planned.write_into(memoryview(target)) == planned.size
    assert target[: planned.size] == fmt.encode(block, "fp")
    assert planned.size % fmt.ALIGN == 0


def test_payload_sections_are_aligned_and_small_sections_first():
    header = fmt.read_header(fmt.encode(make_block(5)))
    names = sorted(header.sections, key=lambda n: header.sections[n].offset)
    assert names[:2] == ["rep_keys", "positions"] and names[-2:] == ["keys", "values"]
    assert header.payload_start % fmt.ALIGN == 0
    assert all(s.offset % fmt.ALIGN == 0 for s in header.sections.values())
    assert header.layers == 2 and header.dtype == "float16" and header.quantization == "none"


@pytest.mark.parametrize("where", ["fixed", "header", "payload", "last"])
def test_flipped_byte_is_detected(where):
    buf = fmt.encode(make_block(7))
    header = fmt.read_header(buf)
    pos = {
        "fixed": 9,
        "header": fmt.FIXED_SIZE + 5,
        "payload": header.payload_start + 3,
        "last": len(buf) - 1,
    }[where]
    buf[pos] ^= 0x01
    with pytest.raises(CorruptBlockError):
        fmt.decode(buf)


def test_flipped_checksum_is_detected():
    buf = fmt.encode(make_block(7))
    buf[21] ^= 0x10
    with pytest.raises(CorruptBlockError, match="checksum"):
        fmt.decode(buf)


@pytest.mark.parametrize("cut", [0, 10, 30, -1, -200])
def test_truncated_is_detected(cut):
    buf = fmt.encode(make_block(7))
    with pytest.raises(CorruptBlockError):
        fmt.decode(buf[:cut])


def test_trailing_garbage_is_detected():
    with pytest.raises(CorruptBlockError, match="trailing"):
        fmt.decode(fmt.encode(make_block(7)) + b"\0")


def test_wrong_version_and_magic():
    buf = fmt.encode(make_block(7))
    struct.pack_into("<H", buf, 4, fmt.FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedVersionError, match="version"):
        fmt.decode(buf)
    buf = fmt.encode(make_block(7))
    buf[0:4] = b"XXXX"
    with pytest.raises(CorruptBlockError, match="magic"):
        fmt.decode(buf)


def test_fingerprint_mismatch_is_refused():
    buf = fmt.encode(make_block(7), fingerprint="model-a")
    with pytest.raises(CorruptBlockError, match="model-a"):
        fmt.decode(buf, expect_fingerprint="model-b")


def test_non_json_meta_is_a_clear_error():
    with pytest.raises(ValueError, match="JSON"):
        fmt.encode(make_block(1, meta={"x": object()}))


def test_numpy_scalars_in_meta_become_numbers():
    import numpy as np

    out = fmt.decode(fmt.encode(make_block(1, meta={"score": np.float32(0.5), "n": np.int64(3)})))
    assert out.meta == {"score": 0.5, "n": 3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_int8_group_quantization_is_bounded_and_smaller(dtype):
    block = make_block(2, dtype=dtype, head_dim=32, tokens=16, rope_rows=3)
    exact = fmt.encode(block, "fp")
    small = fmt.encode(block, "fp", quantization="int8-g16")
    header = fmt.read_header(small)
    assert header.quantization == "int8-g16" and header.dtype == fmt.dtype_name(dtype)
    assert len(small) < 0.6 * len(exact) if dtype == torch.float32 else len(small) < 0.75 * len(exact)
    out = fmt.decode(small, expect_fingerprint="fp")
    for name in ("keys", "values"):
        x, y = getattr(block, name), getattr(out, name)
        assert y.dtype == dtype and y.shape == x.shape
        groups = x.float().reshape(*x.shape[:-1], 2, 16)
        bound = groups.abs().amax(-1, keepdim=True) / 127 / 2  # half a quantization step
        err = (y.float() - x.float()).reshape(groups.shape).abs()
        assert torch.all(err <= bound * 1.01 + groups.abs() * 2**-7)  # + output-dtype rounding
        assert not torch.equal(x, y)  # lossy
    assert torch.equal(out.positions, block.positions) and torch.equal(out.rep_keys, block.rep_keys)
    assert out.meta == block.meta
    assert fmt.transcode(small, "int8-g16") is small and fmt.transcode(small, "none") is small
    assert fmt.read_header(fmt.transcode(exact, "int8-g16")).quantization == "int8-g16"


def test_quantized_corruption_and_unknown_scheme():
    buf = fmt.encode(make_block(1), quantization="int8-g16")
    buf[-3] ^= 1
    with pytest.raises(CorruptBlockError):
        fmt.decode(buf)
    with pytest.raises(ValueError, match="quantization scheme"):
        fmt.encode(make_block(1), quantization="int3")
