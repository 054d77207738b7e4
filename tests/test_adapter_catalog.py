"""The adapter catalogue validates every GGUF LoRA file against the base before llama.cpp sees it.

Nothing here loads llama.cpp: the adapters are the tiny ones of scripts/make_tiny_models.py and
hand-written GGUF files that break one rule each.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge.backends.catalog import (
    AdapterCatalog,
    AdapterError,
    AdapterInfo,
    AdapterSidecar,
    BaseModelInfo,
    ScanReport,
    is_valid_name,
    load_sidecar,
    validate_adapter,
)
from edge.catalogue import Catalogue, UnknownObjectError
from edge.errors import ConfigError, EdgeError

# The tiny llama's LoRA targets, (n_out, n_in) in numpy terms, worked out from its
# hyperparameters: n_embd 64, 4 query heads of 16, 2 KV heads of 16, n_ff 128, 3 blocks.
TARGETS = {"attn_q": (64, 64), "attn_v": (32, 64), "ffn_up": (128, 64)}
N_LAYER = 3
N_VOCAB = 359  # 3 specials + 256 byte tokens + 100 pieces


def expected_nbytes(rank: int, bytes_per_element: int = 4) -> int:
    """A (r, n_in) and B (n_out, r) per target per layer."""
    return N_LAYER * sum(bytes_per_element * rank * (n_in + n_out)
                         for n_out, n_in in TARGETS.values())


@pytest.fixture(scope="module")
def base(tiny_models) -> BaseModelInfo:
    return BaseModelInfo.from_gguf(tiny_models.base)


@pytest.fixture
def adapter_dir(tmp_path, tiny_models) -> Path:
    """A fresh directory holding copies of the three good adapters (ranks 4, 16, 8)."""
    directory = tmp_path / "adapters"
    directory.mkdir()
    for path in tiny_models.adapters:
        shutil.copy(path, directory / path.name)
    return directory


def lora_pair(rng, target: str, rank: int, layer: int = 0, n_in: int | None = None,
              n_out: int | None = None) -> dict[str, np.ndarray]:
    out_default, in_default = TARGETS[target]
    n_in, n_out = n_in or in_default, n_out or out_default
    name = f"blk.{layer}.{target}.weight"
    return {f"{name}.lora_a": rng.normal(size=(rank, n_in)).astype(np.float32),
            f"{name}.lora_b": rng.normal(size=(n_out, rank)).astype(np.float32)}


def write_lora(path: Path, tensors: dict[str, np.ndarray], *, arch: str = "llama",
               general_type: str | None = "adapter", adapter_type: str | None = "lora",
               alpha: float | None = 8.0, extra=None) -> Path:
    """A GGUF LoRA file the way convert_lora_to_gguf.py writes one; each keyword breaks a rule."""
    w = gguf.GGUFWriter(str(path), arch)
    if general_type is not None:
        w.add_type(general_type)
    if adapter_type is not None:
        w.add_string(gguf.Keys.Adapter.TYPE, adapter_type)
    if alpha is not None:
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if extra is not None:
        extra(w)
    for name, data in tensors.items():
        if isinstance(data, tuple):  # (quantized uint8 rows, ggml type)
            raw, qtype = data
            w.add_tensor(name, raw, raw_dtype=qtype)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reason_of(path: Path, base: BaseModelInfo) -> str:
    with pytest.raises(AdapterError) as info:
        validate_adapter(path, base)
    assert str(path) in str(info.value)  # the message names the file
    assert info.value.path == path
    return info.value.reason


# --------------------------------------------------------------------------------------------
# The base model


def test_base_model_info_has_the_architecture_and_every_tensor(base, tiny_models):
    assert base.architecture == "llama"
    assert base.path == tiny_models.base
    assert len(base.tensors) == 3 + 9 * N_LAYER
    assert base.tensors["token_embd.weight"].shape == (N_VOCAB, 64)
    assert base.tensors["token_embd.weight"].dtype == "F32"
    assert base.tensors["output_norm.weight"].shape == (64,)
    for target, shape in TARGETS.items():
        for layer in range(N_LAYER):
            assert base.tensors[f"blk.{layer}.{target}.weight"].shape == shape


def test_an_unreadable_base_is_a_config_error(tmp_path, tiny_models):
    with pytest.raises(ConfigError, match="cannot read"):
        BaseModelInfo.from_gguf(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ConfigError, match="not a readable GGUF file.*magic"):
        BaseModelInfo.from_gguf(junk)
    with pytest.raises(ConfigError, match="this is an adapter, not a base model"):
        BaseModelInfo.from_gguf(tiny_models.adapters[0])
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_models.base.read_bytes()[:5000])  # inside the token list
    with pytest.raises(ConfigError, match="not a readable GGUF file: element .* of "
                                          "'tokenizer.ggml.tokens' claims"):
        BaseModelInfo.from_gguf(truncated)


# --------------------------------------------------------------------------------------------
# One adapter


@pytest.mark.parametrize("index, rank", [(0, 4), (1, 16), (2, 8)])
def test_good_adapters_validate_with_the_bytes_their_tensors_take(base, tiny_models, index,
                                                                   rank):
    path = tiny_models.adapters[index]
    info = validate_adapter(path, base)
    assert isinstance(info, AdapterInfo)
    assert info.path == path and info.architecture == "llama"
    assert info.rank == rank and info.alpha == float(rank)
    assert dict(info.ranks) == {f"blk.{i}.{t}.weight": rank
                                for i in range(N_LAYER) for t in TARGETS}
    assert info.nbytes == expected_nbytes(rank)
    assert info.nbytes < info.file_size == path.stat().st_size
    assert len(info.tensors) == 2 * N_LAYER * len(TARGETS)
    assert all(t.offset + t.nbytes <= info.file_size for t in info.tensors)
    # Every tiny tensor is a multiple of 32 bytes, so llama.cpp's CPU buffer holds no padding.
    assert info.buffer_bytes(32) == info.nbytes
    if rank == 4:  # A 1024 bytes; B 1024, 512 (padded to 1024) and 2048 bytes
        assert info.buffer_bytes(1024) == N_LAYER * (3 * 1024 + 1024 + 1024 + 2048)


def test_ranks_may_differ_per_target_and_rank_is_the_largest(tmp_path, base):
    rng = np.random.default_rng(1)
    path = write_lora(tmp_path / "mixed.gguf", {**lora_pair(rng, "attn_q", 2),
                                                **lora_pair(rng, "ffn_up", 6, layer=2)})
    info = validate_adapter(path, base)
    assert dict(info.ranks) == {"blk.0.attn_q.weight": 2, "blk.2.ffn_up.weight": 6}
    assert info.rank == 6
    assert info.nbytes == 4 * 2 * (64 + 64) + 4 * 6 * (64 + 128)


def test_f16_and_q8_0_adapters_count_their_stored_bytes(tmp_path, base):
    rng = np.random.default_rng(2)
    half = {k: v.astype(np.float16) for k, v in lora_pair(rng, "attn_q", 4).items()}
    info = validate_adapter(write_lora(tmp_path / "f16.gguf", half), base)
    assert info.nbytes == 2 * 4 * (64 + 64)
    assert {t.dtype for t in info.tensors} == {"F16"}

    # Q8_0 packs 32 elements into 34 bytes; rows (ggml ne[0]: n_in for A, r for B) are whole
    # blocks, so the rank is 32 here.
    q8 = gguf.GGMLQuantizationType.Q8_0
    a = rng.normal(size=(32, 64)).astype(np.float32)
    b = rng.normal(size=(64, 32)).astype(np.float32)
    tensors = {"blk.0.attn_q.weight.lora_a": (gguf.quants.quantize(a, q8), q8),
               "blk.0.attn_q.weight.lora_b": (gguf.quants.quantize(b, q8), q8)}
    info = validate_adapter(write_lora(tmp_path / "q8.gguf", tensors), base)
    assert info.rank == 32
    assert info.nbytes == (32 * 64 + 64 * 32) // 32 * 34
    assert {t.shape for t in info.tensors} == {(32, 64), (64, 32)}


def test_token_embedding_lora_uses_llama_cpp_s_flipped_layout(tmp_path, base):
    # llama.cpp gathers rows of A for the token ids: A is (n_vocab, r), B is (n_embd, r).
    rng = np.random.default_rng(3)
    good = {"token_embd.weight.lora_a": rng.normal(size=(N_VOCAB, 4)).astype(np.float32),
            "token_embd.weight.lora_b": rng.normal(size=(64, 4)).astype(np.float32)}
    info = validate_adapter(write_lora(tmp_path / "embd.gguf", good), base)
    assert info.ranks["token_embd.weight"] == 4
    # Different ranks in A and B pass llama.cpp's own check there and abort in ggml_mul_mat.
    bad = dict(good, **{"token_embd.weight.lora_b":
                        rng.normal(size=(64, 5)).astype(np.float32)})
    reason = reason_of(write_lora(tmp_path / "embd-bad.gguf", bad), base)
    assert "token_embd.weight" in reason and "do not fit" in reason


def test_truncated_and_random_files_are_refused(tmp_path, base, tiny_models):
    data = tiny_models.adapters[0].read_bytes()
    cases = {
        "empty": b"",
        "magic-only": data[:4],
        "in-header": data[:100],
        "in-tensor-infos": data[:1000],
        "in-tensor-data": data[:len(data) // 2],
        "last-byte": data[:-1],
        "random": np.random.default_rng(4).bytes(len(data)),
    }
    reasons = {}
    for name, content in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(content)
        reasons[name] = reason_of(path, base)
    assert "magic" in reasons["empty"] and "magic" in reasons["random"]
    assert "file ends inside the version" in reasons["magic-only"]
    assert "header claims 18 tensors, more than the 76 bytes left" in reasons["in-header"]
    assert "file ends inside" in reasons["in-tensor-infos"]
    assert "extends past the end of the file" in reasons["in-tensor-data"]
    assert "'blk.2.ffn_up.weight.lora_b' extends past the end" in reasons["last-byte"]


def test_wrong_architecture(tmp_path, base):
    rng = np.random.default_rng(5)
    path = write_lora(tmp_path / "qwen.gguf", lora_pair(rng, "attn_q", 4), arch="qwen2")
    assert reason_of(path, base) == ("architecture 'qwen2' does not match the base model's "
                                     "'llama' (base.gguf)")


def test_shape_mismatch(tmp_path, base):
    rng = np.random.default_rng(6)
    path = write_lora(tmp_path / "wide.gguf", lora_pair(rng, "attn_q", 4, n_in=48))
    reason = reason_of(path, base)
    assert reason == ("LoRA shapes for blk.0.attn_q.weight (64, 64) do not fit: lora_a is "
                      "(4, 48), expected (r, 64); lora_b is (64, 4), expected (64, r)")
    # A and B of different ranks.
    pair = lora_pair(rng, "attn_v", 4)
    pair["blk.0.attn_v.weight.lora_b"] = rng.normal(size=(32, 8)).astype(np.float32)
    assert "do not fit" in reason_of(write_lora(tmp_path / "ranks.gguf", pair), base)
    # A and B transposed (the old "finetune" example's layout).
    pair = lora_pair(rng, "ffn_up", 4)
    pair = {k: v.T.copy() for k, v in pair.items()}
    assert "do not fit" in reason_of(write_lora(tmp_path / "transposed.gguf", pair), base)


def test_missing_pair(tmp_path, base):
    rng = np.random.default_rng(7)
    tensors = {**lora_pair(rng, "attn_q", 4), **lora_pair(rng, "attn_v", 4)}
    del tensors["blk.0.attn_v.weight.lora_b"]
    assert reason_of(write_lora(tmp_path / "half.gguf", tensors), base) == (
        "blk.0.attn_v.weight.lora_b is missing: blk.0.attn_v.weight.lora_a has no partner "
        "(LoRA tensors come in .lora_a/.lora_b pairs)")


@pytest.mark.parametrize("general_type, adapter_type, expected", [
    ("model", "lora", "general.type is 'model', expected 'adapter' (is this a base model?)"),
    (None, "lora", "general.type is missing, expected 'adapter' (is this a base model?)"),
    ("adapter", "control_vector", "adapter.type is 'control_vector', expected 'lora'"),
    ("adapter", None, "metadata adapter.type is missing"),
])
def test_wrong_general_or_adapter_type(tmp_path, base, general_type, adapter_type, expected):
    rng = np.random.default_rng(8)
    path = write_lora(tmp_path / "typed.gguf", lora_pair(rng, "attn_q", 4),
                      general_type=general_type, adapter_type=adapter_type)
    assert reason_of(path, base) == expected


def test_metadata_llama_cpp_would_abort_on_is_refused(tmp_path, base):
    # llama.cpp reads these with gguf_get_val_str / gguf_get_val_f32, which GGML_ASSERT on the
    # type: a file like this would take the whole process down.
    rng = np.random.default_rng(9)
    pair = lora_pair(rng, "attn_q", 4)
    path = write_lora(tmp_path / "int-type.gguf", pair, general_type=None,
                      extra=lambda w: w.add_uint32(gguf.Keys.General.TYPE, 7))
    assert reason_of(path, base) == "metadata general.type must be a string, not a UINT32"
    path = write_lora(tmp_path / "int-alpha.gguf", pair, alpha=None,
                      extra=lambda w: w.add_uint32(gguf.Keys.Adapter.LORA_ALPHA, 8))
    assert reason_of(path, base) == "metadata adapter.lora.alpha must be a FLOAT32, not a UINT32"
    path = write_lora(tmp_path / "nan-alpha.gguf", pair, alpha=float("nan"))
    assert "not a finite number" in reason_of(path, base)
    # No alpha at all is fine: llama.cpp then applies the user scale as it is.
    assert validate_adapter(write_lora(tmp_path / "no-alpha.gguf", pair, alpha=None),
                            base).alpha is None


def test_tensor_names_must_be_lora_pairs_over_existing_base_tensors(tmp_path, base):
    rng = np.random.default_rng(10)
    pair = lora_pair(rng, "attn_q", 4)
    extra = {"blk.0.attn_q.weight": rng.normal(size=(64, 64)).astype(np.float32)}
    assert "is not named <base tensor>.lora_a" in reason_of(
        write_lora(tmp_path / "full.gguf", {**pair, **extra}), base)
    ghost = {k.replace("blk.0", "blk.9"): v for k, v in pair.items()}
    assert reason_of(write_lora(tmp_path / "ghost.gguf", ghost), base) == (
        "targets 'blk.9.attn_q.weight', which the base model (base.gguf) does not have")
    assert reason_of(write_lora(tmp_path / "empty.gguf", {}), base) == (
        "holds no LoRA tensors (<base tensor>.lora_a / .lora_b)")
    doubles = {k: v.astype(np.float64) for k, v in pair.items()}
    assert "has dtype F64; LoRA tensors must be one of" in reason_of(
        write_lora(tmp_path / "f64.gguf", doubles), base)
    # llama.cpp skips norm vectors in an adapter: allowed, not counted.
    norm = {"blk.0.attn_norm.weight": np.ones(64, dtype=np.float32)}
    info = validate_adapter(write_lora(tmp_path / "norm.gguf", {**pair, **norm}), base)
    assert info.nbytes == 4 * 4 * (64 + 64)
    assert len(info.tensors) == 3


def test_adapter_error_is_an_edge_error_and_a_value_error_and_pickles(tmp_path, base):
    path = tmp_path / "nothing.gguf"
    with pytest.raises(AdapterError) as info:
        validate_adapter(path, base)
    err = info.value
    assert isinstance(err, EdgeError) and isinstance(err, ValueError)
    assert str(err).startswith(f"adapter {str(path)!r}: cannot read it")
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (err.path, err.reason, str(err))


@pytest.mark.timeout(10)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path, base):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    assert "not a regular file" in reason_of(fifo, base)


# --------------------------------------------------------------------------------------------
# Sidecars and names


def test_names():
    for good in ("sql", "a", "Sql-2.v1_final", "0", "x" * 128, "a.b"):
        assert is_valid_name(good), good
    for bad in ("", ".hidden", "-x", "_x", "a b", "../x", "a/b", "a\\b", "a..b", "x" * 129,
                "é", "a\n", None, 3):
        assert not is_valid_name(bad), bad


def test_sidecar_values(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("name: sql\ndescription: SQL writer\ntags: [code, sql]\nscale: 0.5\n")
    assert load_sidecar(path) == AdapterSidecar("sql", "SQL writer", ("code", "sql"), 0.5)
    path.write_text("")
    assert load_sidecar(path) == AdapterSidecar()
    path.write_text("scale: 2\n")
    assert load_sidecar(path).scale == 2.0
    bad = {
        "name: ../x\n": "name: '../x' is not a valid adapter name",
        "nam: x\n": "unknown key(s) 'nam' (allowed: name, description, tags, scale)",
        "scale: .nan\n": "scale must be a finite number, got nan",
        "scale: high\n": "scale must be a finite number, got 'high'",
        "scale: true\n": "scale must be a finite number, got True",
        "tags: code\n": "tags must be a list of strings, got 'code'",
        "tags: [1]\n": "tags must be a list of strings, got [1]",
        "description: [x]\n": "description must be a string, not list",
        "- a\n- b\n": "must be a mapping of name, description, tags, scale, not list",
        "name: [unclosed\n": "is not valid YAML",
        "scale: 1" + "0" * 400 + "\n": "scale must be a finite number, got 1000",
        "description: 2023-13-45\n": "is not valid YAML (ValueError",
        "!!python/object:os.system {}\n": "is not valid YAML",
    }
    for text, expected in bad.items():
        path.write_text(text)
        with pytest.raises(AdapterError) as info:
            load_sidecar(path)
        assert expected in info.value.reason, (text, info.value.reason)
    path.write_text("description: " + "x" * (70 << 10) + "\n")
    with pytest.raises(AdapterError, match="more than the 65536 a sidecar may be"):
        load_sidecar(path)


def test_sidecar_sets_name_and_metadata(adapter_dir, base):
    (adapter_dir / "lora-0-r4.yaml").write_text(
        "name: sql\ndescription: SQL writer\ntags: [code, sql]\nscale: 0.5\n")
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    assert set(catalog.catalogue) == {"sql", "lora-1-r16", "lora-2-r8"}
    entry = catalog.catalogue["sql"]
    assert entry.size == expected_nbytes(4)
    assert entry.location == str((adapter_dir / "lora-0-r4.gguf").resolve())
    assert dict(entry.metadata) == {"scale": 0.5, "description": "SQL writer",
                                    "tags": ["code", "sql"], "rank": 4, "alpha": 4.0}
    assert dict(catalog.catalogue["lora-1-r16"].metadata) == {
        "scale": 1.0, "description": "", "tags": [], "rank": 16, "alpha": 16.0}


def test_bad_names_and_sidecars_reject_only_their_adapter(adapter_dir, base, tiny_models):
    shutil.copy(tiny_models.adapters[0], adapter_dir / "my adapter.gguf")
    shutil.copy(tiny_models.adapters[0], adapter_dir / ".hidden.gguf")
    shutil.copy(tiny_models.adapters[0], adapter_dir / "escape.gguf")
    (adapter_dir / "escape.yaml").write_text("name: ../x\n")
    shutil.copy(tiny_models.adapters[0], adapter_dir / "odd.gguf")
    (adapter_dir / "odd.yaml").write_text("colour: red\n")
    catalog = AdapterCatalog(adapter_dir, base)
    report = catalog.scan()
    assert report.added == ("lora-0-r4", "lora-1-r16", "lora-2-r8")
    assert set(catalog.catalogue) == {"lora-0-r4", "lora-1-r16", "lora-2-r8"}
    rejected = dict(catalog.rejected)
    assert rejected == dict(report.rejected)
    assert rejected[adapter_dir / "my adapter.gguf"].startswith(
        "file name: 'my adapter' is not a valid adapter name")
    assert rejected[adapter_dir / ".hidden.gguf"].startswith(
        "file name: '.hidden' is not a valid adapter name")
    assert rejected[adapter_dir / "escape.gguf"].startswith(
        "sidecar escape.yaml: name: '../x' is not a valid adapter name")
    assert rejected[adapter_dir / "odd.gguf"] == (
        "sidecar odd.yaml: unknown key(s) 'colour' (allowed: name, description, tags, scale)")
    assert len(rejected) == 4


def test_a_duplicate_name_rejects_the_second_file(adapter_dir, base):
    (adapter_dir / "lora-2-r8.yaml").write_text("name: lora-0-r4\n")
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    assert set(catalog.catalogue) == {"lora-0-r4", "lora-1-r16"}
    assert catalog.catalogue["lora-0-r4"].size == expected_nbytes(4)
    assert dict(catalog.rejected) == {adapter_dir / "lora-2-r8.gguf": (
        f"duplicate adapter name 'lora-0-r4': "
        f"{str((adapter_dir / 'lora-0-r4.gguf').resolve())!r} already has it")}


def test_a_name_stays_with_the_file_that_held_it(adapter_dir, base, tiny_models):
    (adapter_dir / "lora-2-r8.yaml").write_text("name: shared\n")
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    # A newcomer that sorts first claims the same name: it is the duplicate, not the holder.
    shutil.copy(tiny_models.adapters[1], adapter_dir / "a-new.gguf")
    (adapter_dir / "a-new.yaml").write_text("name: shared\n")
    report = catalog.scan()
    assert report.added == report.removed == report.changed == ()
    assert catalog.catalogue["shared"].size == expected_nbytes(8)
    assert "duplicate adapter name 'shared'" in catalog.rejected[adapter_dir / "a-new.gguf"]


# --------------------------------------------------------------------------------------------
# The catalogue of a directory


def test_catalogue_holds_the_good_adapters_and_skips_the_bad(adapter_dir, base, tiny_models):
    (adapter_dir / "junk.gguf").write_bytes(b"GGUF" + bytes(100))
    rng = np.random.default_rng(11)
    write_lora(adapter_dir / "qwen.gguf", lora_pair(rng, "attn_q", 4), arch="qwen2")
    (adapter_dir / "notes.txt").write_text("not matched by the pattern")
    (adapter_dir / "sub.gguf").mkdir()  # a directory matching the pattern is not a file
    catalog = AdapterCatalog(adapter_dir, tiny_models.base)  # a base given by path
    assert len(catalog.catalogue) == 0  # nothing is read before scan()
    report = catalog.scan()
    assert isinstance(report, ScanReport) and report.modified
    cat = catalog.catalogue
    assert isinstance(cat, Catalogue)
    assert list(cat) == ["lora-0-r4", "lora-1-r16", "lora-2-r8"]
    assert cat.sizes() == {"lora-0-r4": expected_nbytes(4), "lora-1-r16": expected_nbytes(16),
                           "lora-2-r8": expected_nbytes(8)}
    assert set(catalog.rejected) == {adapter_dir / "junk.gguf", adapter_dir / "qwen.gguf"}
    assert "architecture 'qwen2'" in catalog.rejected[adapter_dir / "qwen.gguf"]
    assert catalog.adapters["lora-1-r16"].info.rank == 16
    assert "lora-0-r4" in catalog and len(catalog) == 3


def test_rescan_picks_up_added_removed_and_replaced_files(adapter_dir, base, tiny_models,
                                                          monkeypatch):
    import edge.backends.catalog as module

    calls = []
    real_validate = module.validate_adapter
    monkeypatch.setattr(module, "validate_adapter",
                        lambda path, b: calls.append(Path(path).name) or real_validate(path, b))
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    assert sorted(calls) == ["lora-0-r4.gguf", "lora-1-r16.gguf", "lora-2-r8.gguf"]

    calls.clear()
    assert catalog.scan() == ScanReport(rejected={})
    assert calls == []  # unchanged files are not read again

    rng = np.random.default_rng(12)
    write_lora(adapter_dir / "new.gguf", lora_pair(rng, "attn_v", 2))
    (adapter_dir / "lora-1-r16.gguf").unlink()
    # Replaced the way a deploy does it: a new file renamed over the old one (new inode).
    tmp = adapter_dir / "lora-0-r4.gguf.tmp"
    shutil.copy(tiny_models.adapters[2], tmp)
    os.replace(tmp, adapter_dir / "lora-0-r4.gguf")
    calls.clear()
    report = catalog.scan()
    assert (report.added, report.removed, report.changed) == (
        ("new",), ("lora-1-r16",), ("lora-0-r4",))
    assert sorted(calls) == ["lora-0-r4.gguf", "new.gguf"]
    assert catalog.catalogue.sizes() == {"lora-0-r4": expected_nbytes(8),
                                         "lora-2-r8": expected_nbytes(8),
                                         "new": 4 * 2 * (64 + 32)}

    # A sidecar edit changes the entry too.
    (adapter_dir / "new.yaml").write_text("scale: 0.25\n")
    report = catalog.scan()
    assert report.changed == ("new",)
    assert catalog.catalogue["new"].metadata["scale"] == 0.25

    # A rejected file that is fixed joins; one that breaks leaves.
    (adapter_dir / "lora-2-r8.gguf").write_bytes(b"nonsense")
    (adapter_dir / "late.gguf").write_bytes(b"partial")
    report = catalog.scan()
    assert report.removed == ("lora-2-r8",) and report.added == ()
    assert set(report.rejected) == {adapter_dir / "lora-2-r8.gguf", adapter_dir / "late.gguf"}
    shutil.copy(tiny_models.adapters[1], adapter_dir / "late.gguf")
    report = catalog.scan()
    assert report.added == ("late",)
    assert catalog.last_report is report


def test_rejections_are_logged_once(adapter_dir, base, caplog):
    (adapter_dir / "junk.gguf").write_bytes(b"junk")
    catalog = AdapterCatalog(adapter_dir, base)
    with caplog.at_level(logging.WARNING, logger="edge.adapters"):
        catalog.scan()
        catalog.scan()
    warnings = [r for r in caplog.records
                if r.name == "edge.adapters" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "junk.gguf" in warnings[0].getMessage() and "magic" in warnings[0].getMessage()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_symlink_out_of_the_directory_is_refused(adapter_dir, base, tiny_models, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tiny_models.adapters[0], outside / "secret.gguf")
    (outside / "notes.yaml").write_text("name: notes\n")
    os.symlink(outside / "secret.gguf", adapter_dir / "secret.gguf")
    os.symlink(adapter_dir / "lora-1-r16.gguf", adapter_dir / "alias.gguf")  # inside: fine
    shutil.copy(tiny_models.adapters[0], adapter_dir / "notes.gguf")
    os.symlink(outside / "notes.yaml", adapter_dir / "notes.yaml")
    os.symlink(adapter_dir / "nowhere.gguf", adapter_dir / "dangling.gguf")
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    assert set(catalog.catalogue) == {"alias", "lora-0-r4", "lora-1-r16", "lora-2-r8"}
    assert catalog.resolve("alias") == (adapter_dir / "lora-1-r16.gguf").resolve()
    assert catalog.rejected[adapter_dir / "secret.gguf"].startswith(
        f"resolves to {str((outside / 'secret.gguf').resolve())!r}, outside the adapter "
        "directory")
    assert "sidecar notes.yaml resolves to" in catalog.rejected[adapter_dir / "notes.gguf"]
    assert catalog.rejected[adapter_dir / "dangling.gguf"] == "is a dangling symlink"

    # A symlink retargeted outside after the scan cannot redirect a load: the entry holds the
    # file that was validated, not the link; the next scan refuses the link.
    (adapter_dir / "alias.gguf").unlink()
    os.symlink(outside / "secret.gguf", adapter_dir / "alias.gguf")
    assert catalog.resolve("alias") == (adapter_dir / "lora-1-r16.gguf").resolve()
    catalog.scan()
    assert "alias" not in catalog.catalogue
    assert "outside the adapter directory" in catalog.rejected[adapter_dir / "alias.gguf"]


def test_resolve_only_returns_validated_files_inside_the_directory(adapter_dir, base,
                                                                   tiny_models):
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    path = catalog.resolve("lora-0-r4")
    assert path == (adapter_dir / "lora-0-r4.gguf").resolve()
    assert path.is_relative_to(adapter_dir.resolve())
    for name in ("../lora-0-r4", "/etc/passwd", "lora-0-r4/../x", "", ".", "..", "a b"):
        with pytest.raises(UnknownObjectError, match="not a valid adapter name"):
            catalog.resolve(name)
    with pytest.raises(UnknownObjectError, match="'base' is not in the adapter catalogue"):
        catalog.resolve("base")
    # Replaced after the scan: not the file that was validated, so not handed out.
    tmp = adapter_dir / "swap.tmp"
    tmp.write_bytes(b"GGUF garbage")
    os.replace(tmp, adapter_dir / "lora-0-r4.gguf")
    with pytest.raises(AdapterError, match="changed since it was validated; rescan"):
        catalog.resolve("lora-0-r4")
    (adapter_dir / "lora-1-r16.gguf").unlink()
    with pytest.raises(AdapterError, match="is gone since the last scan"):
        catalog.resolve("lora-1-r16")
    catalog.scan()
    with pytest.raises(UnknownObjectError):
        catalog.resolve("lora-0-r4")


def test_scan_if_due(adapter_dir, base):
    catalog = AdapterCatalog(adapter_dir, base)
    assert catalog.scan_if_due(100.0, 30) is not None
    assert catalog.scan_if_due(110.0, 30) is None
    assert catalog.scan_if_due(129.9, 30) is None
    assert catalog.scan_if_due(130.0, 30) is not None
    for interval in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="rescan interval"):
            catalog.scan_if_due(200.0, interval)


def test_catalog_configuration_errors(tmp_path, base):
    with pytest.raises(ConfigError, match="does not exist or is not a directory"):
        AdapterCatalog(tmp_path / "missing", base)
    for pattern in ("../*.gguf", "sub/*.gguf", ""):
        with pytest.raises(ConfigError, match="must match file names in the directory"):
            AdapterCatalog(tmp_path, base, pattern=pattern)
    directory = tmp_path / "adapters"
    directory.mkdir()
    catalog = AdapterCatalog(directory, base)
    directory.rename(tmp_path / "moved")
    with pytest.raises(ConfigError, match="is gone; keeping the catalogue"):
        catalog.scan()


def test_readers_see_a_whole_catalogue_while_scans_run(adapter_dir, base, tiny_models):
    catalog = AdapterCatalog(adapter_dir, base)
    catalog.scan()
    stop = threading.Event()
    seen: set[int] = set()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                cat = catalog.catalogue
                seen.add(len(cat))
                for entry in cat.values():
                    assert entry.size > 0
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        extra = adapter_dir / "extra.gguf"
        for _ in range(20):
            shutil.copy(tiny_models.adapters[0], extra)
            catalog.scan()
            extra.unlink()
            catalog.scan()
    finally:
        stop.set()
        reader.join(timeout=10)
    assert not errors
    assert seen <= {3, 4}
