"""The expert store against the GGUF layout as gguf's own reader sees it.

Golden values come from ``gguf.GGUFReader`` (offsets, sizes, the tensor's numpy view) and from
decoding the stored bytes by hand here (BF16: the high half of a float32; Q8_0: blocks of one
f16 scale then 32 int8), never from the store itself.
"""

from __future__ import annotations

import os
import sys

import gguf
import numpy as np
import pytest
from page_cache import page_cache_residency

from edge.backends.experts import (
    ExpertStore,
    MoeFormatError,
    UnsupportedExpertType,
    expert_key,
    split_key,
)
from edge.tiny_models import make_tiny_models, make_tiny_moe

DTYPES = ("f32", "f16", "bf16", "q8_0")
SMALL = dict(n_layer=2, n_expert=8, n_expert_used=2, n_embd=64, n_ff=64)


def dequantize_by_hand(tensor) -> np.ndarray:
    """A reader tensor's float32 values, decoded from its bytes without gguf.quants."""
    data = np.asarray(tensor.data)
    kind = tensor.tensor_type
    if kind == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float32)
    if kind == gguf.GGMLQuantizationType.BF16:
        high = np.ascontiguousarray(data).view(np.uint16).astype(np.uint32) << 16
        return high.view(np.float32)
    if kind == gguf.GGMLQuantizationType.Q8_0:
        blocks = np.ascontiguousarray(data).reshape(-1, 34)
        scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
        quants = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        rows = data.shape[:-1]
        return (quants * scale).reshape(*rows, data.shape[-1] // 34 * 32)
    raise AssertionError(f"no hand decoder for {kind.name}")


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe-store")
    return {dtype: make_tiny_moe(out, structured=True, seed=3, dtype=dtype, **SMALL).path
            for dtype in DTYPES}


def reader_tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("dtype", DTYPES)
def test_byte_ranges_are_the_gguf_tensor_layout(small_models, dtype):
    path = small_models[dtype]
    tensors = reader_tensors(path)
    raw = path.read_bytes()
    with ExpertStore(path) as store:
        assert (store.n_layer, store.n_expert, store.n_expert_used) == (2, 8, 2)
        for layer in range(2):
            for expert in range(8):
                pieces = store.slices(layer, expert)
                for piece, projection in zip(pieces, ("gate", "up", "down"), strict=True):
                    t = tensors[f"blk.{layer}.ffn_{projection}_exps.weight"]
                    assert piece.tensor == t.name
                    assert piece.nbytes * 8 == t.n_bytes
                    assert piece.offset == t.data_offset + expert * t.n_bytes // 8
                    # The same bytes as the reader's own view of that expert.
                    assert raw[piece.offset:piece.offset + piece.nbytes] == \
                        np.asarray(t.data[expert]).tobytes()
                assert store.file_nbytes(layer, expert) == sum(p.nbytes for p in pieces)


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_dtype_dequantises_to_the_readers_values(small_models, dtype):
    path = small_models[dtype]
    tensors = reader_tensors(path)
    with ExpertStore(path) as store:
        for layer, expert in ((0, 0), (1, 5), (1, 7)):
            weights = store.load(layer, expert)
            for projection in ("gate", "up", "down"):
                want = dequantize_by_hand(tensors[f"blk.{layer}.ffn_{projection}_exps.weight"])
                got = getattr(weights, projection)
                assert got.dtype == np.float32 and not got.flags.writeable
                # Exact for every type: Q8_0's values are scale * int8, both exact in float32.
                np.testing.assert_array_equal(got, want[expert])
        want_router = dequantize_by_hand(tensors["blk.1.ffn_gate_inp.weight"])
        np.testing.assert_array_equal(store.router(1), want_router)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_tensors_read_by_the_store_are_the_readers_values(small_models, dtype):
    """Every tensor that is not an expert stack, read by ``read_tensor`` (what MoeModel keeps
    resident), against gguf.GGUFReader's bytes decoded by hand; shapes in numpy order."""
    path = small_models[dtype]
    tensors = reader_tensors(path)
    with ExpertStore(path) as store:
        dense = [name for name in tensors if "_exps." not in name]
        assert "token_embd.weight" in dense and "blk.1.attn_q.weight" in dense
        for name in dense:
            want = dequantize_by_hand(tensors[name])
            got = store.read_tensor(name)
            assert got.dtype == np.float32 and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)
        assert store.has_tensor("blk.0.ffn_norm.weight") and not store.has_tensor("output.bias")
        with pytest.raises(MoeFormatError, match=r"m.*\.gguf: tensor output\.bias is missing"):
            store.read_tensor("output.bias")


def test_q8_0_values_are_close_to_what_was_quantised(small_models):
    """The Q8_0 file's experts are the F32 file's values to within half of Q8_0's step
    (d = max|x|/127 per block of 32) plus the scale's own f16 rounding (127 * d * 2**-11 at
    most): the same seed writes the same draws whatever the storage type."""
    with ExpertStore(small_models["f32"]) as exact, ExpertStore(small_models["q8_0"]) as q8:
        a, b = exact.load(1, 3).up, q8.load(1, 3).up
    step = np.abs(a).reshape(-1, 32).max(axis=1) / 127
    err = np.abs(a - b).reshape(-1, 32).max(axis=1)
    assert np.all(err <= step * (0.5 + 127 * 2.0**-11))
    assert np.any(a != b)


def test_load_reads_only_its_slices_and_maps_nothing(small_models):
    path = small_models["f16"]
    with ExpertStore(path) as store:
        maps = open("/proc/self/maps").read()
        assert str(path) not in maps  # the reader's memmap of the whole file is gone
        store.load(1, 2)
        store.load(0, 7)
        assert store.bytes_read == store.file_nbytes(1, 2) + store.file_nbytes(0, 7)
        assert store.loads == 2
        # Float32 in memory: 3 matrices of 64 x 64.
        assert store.nbytes(1, 2) == 3 * 64 * 64 * 4 == store.load(1, 2).nbytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_fadvise and mincore")
@pytest.mark.parametrize("page_cache", [True, False])
def test_page_cache_false_leaves_no_expert_pages_cached(tmp_path, page_cache):
    # n_ff = n_embd = 128, F32: each projection slice is 64 KiB, whole pages inside it.
    shape = {**SMALL, "n_embd": 128, "n_ff": 128}
    path = make_tiny_moe(tmp_path, structured=True, seed=1, dtype="f32", **shape).path
    with ExpertStore(path, page_cache=page_cache) as store:
        reference = store.load(1, 5)
        again = store.load(1, 5)  # a second read of dropped pages reads the disk again
        np.testing.assert_array_equal(again.gate, reference.gate)
        for piece in store.slices(1, 5):
            cached = page_cache_residency(path, piece.offset, piece.nbytes)
            # Read through the page cache, every page is there; without it, none is.
            assert cached == [page_cache] * len(cached), piece.tensor
        if not page_cache:  # the file was dropped whole at open: experts never read too
            other = store.slices(0, 2)[0]
            assert not any(page_cache_residency(path, other.offset, other.nbytes))


def test_cache_keys_and_loader():
    assert expert_key(3, 17) == (3 << 32) | 17
    assert split_key(expert_key(7, 31)) == (7, 31)


def test_loader_and_sizer_for_the_cache(small_models):
    with ExpertStore(small_models["bf16"]) as store:
        value, nbytes = store.load_key(expert_key(1, 4))
        assert nbytes == value.nbytes == store.size_of_key(expert_key(1, 4))
        np.testing.assert_array_equal(value.down, store.load(1, 4).down)
        with pytest.raises(KeyError, match="no expert 8 in layer 1"):
            store.load(1, 8)
        with pytest.raises(KeyError, match="expert keys are ints"):
            store.load_key("1:4")


def test_a_dense_llama_is_not_a_moe_gguf(tmp_path):
    base = make_tiny_models(tmp_path, n_adapters=0).base
    with pytest.raises(MoeFormatError, match="llama.expert_count is missing"):
        ExpertStore(base)


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf" * 10)
    with pytest.raises(MoeFormatError, match="junk.gguf: not a readable GGUF"):
        ExpertStore(path)


def write_moe(path, *, skip=(), expert_type=gguf.GGMLQuantizationType.F32):
    """A minimal one-layer MoE GGUF (2 experts of 32 x 32), leaving out the tensors in skip."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_expert_count(2)
    w.add_expert_used_count(1)
    rng = np.random.default_rng(0)
    w.add_tensor("blk.0.ffn_gate_inp.weight", rng.normal(size=(2, 32)).astype(np.float32))
    for projection in ("gate", "up", "down"):
        name = f"blk.0.ffn_{projection}_exps.weight"
        if name in skip:
            continue
        data = rng.normal(size=(2, 32, 32)).astype(np.float32)
        if expert_type != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, expert_type)
        w.add_tensor(name, data, raw_dtype=expert_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_missing_expert_tensor_is_named(tmp_path):
    path = write_moe(tmp_path / "m.gguf", skip=("blk.0.ffn_down_exps.weight",))
    with pytest.raises(MoeFormatError, match="missing the stacked expert tensors "
                                             "blk.0.ffn_down_exps.weight"):
        ExpertStore(path)


def test_unsupported_type_names_type_and_tensor(tmp_path):
    path = write_moe(tmp_path / "m.gguf", expert_type=gguf.GGMLQuantizationType.Q4_0)
    with pytest.raises(UnsupportedExpertType,
                       match=r"blk\.0\.ffn_gate_exps\.weight is stored as Q4_0"):
        ExpertStore(path)


def test_a_truncated_file_fails_the_load_by_name(tmp_path):
    path = write_moe(tmp_path / "m.gguf")
    with ExpertStore(path) as store:
        end = store.slices(0, 1)[2].offset  # cut inside the last expert's down slice
        os.truncate(path, end + 10)
        store.load(0, 0)  # its slices are before the cut
        with pytest.raises(MoeFormatError, match=r"truncated: blk\.0\.ffn_down_exps\.weight"):
            store.load(0, 1)


@pytest.mark.parametrize("bad, message", [
    (dict(dtype="q4_0"), "dtype must be one of"),
    (dict(n_ff=48, dtype="q8_0"), "multiples of 32"),
    (dict(n_expert=2, n_expert_used=4), "n_expert_used"),
])
def test_make_tiny_moe_rejects_bad_arguments(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        make_tiny_moe(tmp_path, structured=False, **bad)
