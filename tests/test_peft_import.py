"""Hugging Face PEFT LoRA -> GGUF LoRA (edge.backends.peft) and ``edge adapters import``.

The PEFT directories are built here with the ``safetensors`` package (an implementation
independent of the converter's own reader) over the tiny llama base's shapes. The llama q/k row
permutation is derived in this file from the published rule, and the end-to-end test runs a
numpy Hugging Face-style llama forward (rotate_half rotary, HF row layout) with the PEFT delta
applied, against llama.cpp running the base GGUF with the converted adapter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import edge.tiny_models
from edge.backends import peft
from edge.backends.catalog import BaseModelInfo, validate_adapter
from edge.backends.commands import adapter_name, adapters
from edge.backends.peft import PeftConversionError, convert_peft, plan_peft

tiny = edge.tiny_models
N_LAYER, N_EMBD, N_FF = tiny.N_LAYER, tiny.N_EMBD, tiny.N_FF
N_HEAD, N_HEAD_KV, HEAD_DIM = tiny.N_HEAD, tiny.N_HEAD_KV, tiny.HEAD_DIM

# HF module -> (GGUF tensor, n_out, n_in) for the tiny base.
MODULES = {
    "self_attn.q_proj": ("attn_q", N_HEAD * HEAD_DIM, N_EMBD),
    "self_attn.k_proj": ("attn_k", N_HEAD_KV * HEAD_DIM, N_EMBD),
    "self_attn.v_proj": ("attn_v", N_HEAD_KV * HEAD_DIM, N_EMBD),
    "mlp.up_proj": ("ffn_up", N_FF, N_EMBD),
}
PREFIX = "base_model.model.model.layers"


def lora_tensors(rank: int = 4, seed: int = 0, modules=MODULES, dtype=np.float32,
                 b_std: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(N_LAYER):
        for module, (_, n_out, n_in) in modules.items():
            stem = f"{PREFIX}.{layer}.{module}"
            tensors[f"{stem}.lora_A.weight"] = rng.normal(
                0, 1 / math.sqrt(n_in), (rank, n_in)).astype(dtype)
            tensors[f"{stem}.lora_B.weight"] = rng.normal(
                0, b_std / math.sqrt(rank), (n_out, rank)).astype(dtype)
    return tensors


def write_peft(directory: Path, tensors: dict[str, np.ndarray] | None = None,
               **config) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": "tiny-llama",
           "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj"], "use_dora": False,
           "use_rslora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
           "task_type": "CAUSAL_LM"}
    cfg.update(config)
    (directory / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(lora_tensors() if tensors is None else tensors,
              str(directory / "adapter_model.safetensors"))
    return directory


def read_gguf(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
    return fields, {t.name: np.array(t.data) for t in reader.tensors}


def rotary_row_order(n_out: int, n_head: int) -> np.ndarray:
    """``order[g]`` = the Hugging Face row that becomes GGUF row ``g`` of a llama q/k weight.

    HF's rotary embedding (rotate_half) pairs dimension i of a head with i + head_dim/2;
    llama.cpp's (NORM) pairs 2i with 2i + 1. convert_hf_to_gguf.py's LlamaModel.permute moves
    HF row h*hd + j*hd/2 + i to GGUF row h*hd + 2i + j, and convert_lora_to_gguf.py applies that
    to lora_B's rows (A is untouched). Written out with loops, not with the converter's reshape.
    """
    head_dim = n_out // n_head
    order = np.empty(n_out, dtype=np.int64)
    for h in range(n_head):
        for i in range(head_dim // 2):
            for j in range(2):
                order[h * head_dim + 2 * i + j] = h * head_dim + j * head_dim // 2 + i
    return order


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny.make_tiny_models(tmp_path_factory.mktemp("peft-base"), n_adapters=0).base


# --- conversion -------------------------------------------------------------------------------

def test_converted_names_shapes_values_and_alpha(base, tmp_path):
    tensors = lora_tensors()
    peft_dir = write_peft(tmp_path / "peft", tensors)
    out = convert_peft(peft_dir, base, tmp_path / "out" / "a.gguf")
    assert out == tmp_path / "out" / "a.gguf"
    fields, got = read_gguf(out)
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == 8.0
    expected_names = {f"blk.{layer}.{target}.weight.lora_{part}"
                      for layer in range(N_LAYER) for target, _, _ in MODULES.values()
                      for part in "ab"}
    assert set(got) == expected_names
    for layer in range(N_LAYER):
        for module, (target, n_out, n_in) in MODULES.items():
            a = got[f"blk.{layer}.{target}.weight.lora_a"]
            b = got[f"blk.{layer}.{target}.weight.lora_b"]
            assert a.dtype == np.float32 and a.shape == (4, n_in) and b.shape == (n_out, 4)
            hf_a = tensors[f"{PREFIX}.{layer}.{module}.lora_A.weight"]
            hf_b = tensors[f"{PREFIX}.{layer}.{module}.lora_B.weight"]
            np.testing.assert_array_equal(a, hf_a)
            if target == "attn_q":
                np.testing.assert_array_equal(b, hf_b[rotary_row_order(n_out, N_HEAD)])
            elif target == "attn_k":  # grouped-query: K has its own (smaller) head count
                np.testing.assert_array_equal(b, hf_b[rotary_row_order(n_out, N_HEAD_KV)])
            else:
                np.testing.assert_array_equal(b, hf_b)


def test_the_permutation_matters_for_q_and_k(base, tmp_path):
    # Guards the test above against a vacuous pass: the reordering moves rows.
    order = rotary_row_order(N_HEAD * HEAD_DIM, N_HEAD)
    assert not np.array_equal(order, np.arange(order.size))
    b = np.random.default_rng(1).normal(size=(N_HEAD * HEAD_DIM, 3))
    np.testing.assert_array_equal(peft.permute_qk_rows(b, N_HEAD), b[order])


def test_f16_stays_f16_and_bf16_widens_exactly(base, tmp_path):
    tensors16 = lora_tensors(dtype=np.float16)
    _, got = read_gguf(convert_peft(write_peft(tmp_path / "f16", tensors16), base,
                                    tmp_path / "f16.gguf"))
    a = got["blk.1.ffn_up.weight.lora_a"]
    assert a.dtype == np.float16
    np.testing.assert_array_equal(a, tensors16[f"{PREFIX}.1.mlp.up_proj.lora_A.weight"])

    # numpy has no bfloat16 and neither has safetensors.numpy: write the file by the spec.
    tensors = lora_tensors(modules={"mlp.up_proj": MODULES["mlp.up_proj"]})
    bf16 = {name: (t.view(np.uint32) >> 16).astype("<u2") for name, t in tensors.items()}
    header, blobs, offset = {}, [], 0
    for name, bits in bf16.items():
        header[name] = {"dtype": "BF16", "shape": list(bits.shape),
                        "data_offsets": [offset, offset + bits.nbytes]}
        blobs.append(bits.tobytes())
        offset += bits.nbytes
    peft_dir = write_peft(tmp_path / "bf16", tensors)
    head = json.dumps(header).encode()
    (peft_dir / "adapter_model.safetensors").write_bytes(
        len(head).to_bytes(8, "little") + head + b"".join(blobs))
    _, got = read_gguf(convert_peft(peft_dir, base, tmp_path / "bf16.gguf"))
    b = got["blk.2.ffn_up.weight.lora_b"]
    assert b.dtype == np.float32
    truncated = (bf16[f"{PREFIX}.2.mlp.up_proj.lora_B.weight"].astype(np.uint32) << 16)
    np.testing.assert_array_equal(b, truncated.view(np.float32))


def test_alpha_pattern_and_rank_pattern_fold_into_b(base, tmp_path):
    tensors = lora_tensors(modules={"mlp.up_proj": MODULES["mlp.up_proj"]})
    # Layer 1's up_proj has rank 2 (rank_pattern) and alpha 3 (alpha_pattern).
    rng = np.random.default_rng(5)
    stem = f"{PREFIX}.1.mlp.up_proj"
    tensors[f"{stem}.lora_A.weight"] = rng.normal(size=(2, N_EMBD)).astype(np.float32)
    tensors[f"{stem}.lora_B.weight"] = rng.normal(size=(N_FF, 2)).astype(np.float32)
    peft_dir = write_peft(tmp_path / "p", tensors, rank_pattern={"layers.1.mlp.up_proj": 2},
                          alpha_pattern={"layers.1.mlp.up_proj": 3})
    fields, got = read_gguf(convert_peft(peft_dir, base, tmp_path / "p.gguf"))
    alpha = fields["adapter.lora.alpha"]
    assert alpha == 8.0
    for layer, (r, module_alpha) in {0: (4, 8.0), 1: (2, 3.0), 2: (4, 8.0)}.items():
        a = got[f"blk.{layer}.ffn_up.weight.lora_a"]
        b = got[f"blk.{layer}.ffn_up.weight.lora_b"]
        hf = f"{PREFIX}.{layer}.mlp.up_proj"
        # What llama.cpp applies (alpha / rank of this tensor) equals PEFT's alpha_m / r_m.
        np.testing.assert_allclose((alpha / a.shape[0]) * b @ a,
                                   (module_alpha / r) * tensors[f"{hf}.lora_B.weight"]
                                   @ tensors[f"{hf}.lora_A.weight"], rtol=1e-5, atol=1e-6)
        if layer != 1:
            np.testing.assert_array_equal(b, tensors[f"{hf}.lora_B.weight"])


def test_rslora_scale_is_carried_in_alpha(base, tmp_path):
    tensors = lora_tensors(modules={"mlp.up_proj": MODULES["mlp.up_proj"]})
    peft_dir = write_peft(tmp_path / "rs", tensors, use_rslora=True)
    fields, got = read_gguf(convert_peft(peft_dir, base, tmp_path / "rs.gguf"))
    # PEFT's rsLoRA scale is alpha / sqrt(r); llama.cpp applies alpha_file / r.
    assert fields["adapter.lora.alpha"] / 4 == pytest.approx(8 / math.sqrt(4))
    np.testing.assert_array_equal(got["blk.0.ffn_up.weight.lora_b"],
                                  tensors[f"{PREFIX}.0.mlp.up_proj.lora_B.weight"])


def test_lm_head_maps_to_output(base, tmp_path):
    n_vocab = len(tiny.tokenizer_vocab()[0])
    rng = np.random.default_rng(2)
    tensors = {"base_model.model.lm_head.lora_A.weight": rng.normal(size=(4, N_EMBD)),
               "base_model.model.lm_head.lora_B.weight": rng.normal(size=(n_vocab, 4))}
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    _, got = read_gguf(convert_peft(write_peft(tmp_path / "head", tensors), base,
                                    tmp_path / "head.gguf"))
    assert set(got) == {"output.weight.lora_a", "output.weight.lora_b"}


# --- refusals ---------------------------------------------------------------------------------

def refusal(peft_dir: Path, base: Path) -> str:
    with pytest.raises(PeftConversionError) as info:
        plan_peft(peft_dir, base)
    return str(info.value)


def test_unmapped_modules_are_listed(base, tmp_path):
    tensors = lora_tensors()
    for layer in range(N_LAYER):
        tensors[f"{PREFIX}.{layer}.mlp.frob_proj.lora_A.weight"] = np.zeros((4, 64), np.float32)
        tensors[f"{PREFIX}.{layer}.mlp.frob_proj.lora_B.weight"] = np.zeros((64, 4), np.float32)
    message = refusal(write_peft(tmp_path / "p", tensors), base)
    assert "adapter_model.safetensors" in message
    assert "no tensor in the GGUF layout of llama" in message
    assert "model.layers.N.mlp.frob_proj" in message
    assert "q_proj" not in message


def test_embedding_lora_is_refused(base, tmp_path):
    tensors = lora_tensors()
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = np.zeros((4, 8), np.float32)
    tensors["base_model.model.model.embed_tokens.lora_embedding_B"] = np.zeros((8, 4), np.float32)
    message = refusal(write_peft(tmp_path / "p", tensors), base)
    assert "embedding LoRA" in message and "model.embed_tokens" in message


def test_dora_is_refused(base, tmp_path):
    message = refusal(write_peft(tmp_path / "cfg", use_dora=True), base)
    assert "adapter_config.json" in message and "DoRA" in message
    # Magnitude vectors in the weights are refused even if the config does not say DoRA.
    tensors = lora_tensors()
    tensors[f"{PREFIX}.0.mlp.up_proj.lora_magnitude_vector"] = np.ones(N_FF, np.float32)
    message = refusal(write_peft(tmp_path / "weights", tensors), base)
    assert "adapter_model.safetensors" in message and "DoRA" in message


def test_modules_to_save_is_refused(base, tmp_path):
    message = refusal(write_peft(tmp_path / "cfg", modules_to_save=["lm_head"]), base)
    assert "adapter_config.json" in message and "modules_to_save" in message
    tensors = lora_tensors()
    tensors["base_model.model.lm_head.modules_to_save.default.weight"] = np.zeros(
        (8, N_EMBD), np.float32)
    message = refusal(write_peft(tmp_path / "weights", tensors), base)
    assert "full weights" in message and "lm_head" in message


def test_pickled_weights_are_refused(base, tmp_path):
    peft_dir = write_peft(tmp_path / "p")
    (peft_dir / "adapter_model.safetensors").unlink()
    (peft_dir / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    message = refusal(peft_dir, base)
    assert "adapter_model.bin" in message and "pickle" in message
    assert "adapter_model.safetensors" in message  # says what to provide instead


def test_missing_files_are_named(base, tmp_path):
    peft_dir = write_peft(tmp_path / "p")
    (peft_dir / "adapter_config.json").unlink()
    assert "adapter_config.json: missing" in refusal(peft_dir, base)
    peft_dir = write_peft(tmp_path / "q")
    (peft_dir / "adapter_model.safetensors").unlink()
    assert "adapter_model.safetensors: missing" in refusal(peft_dir, base)
    assert "not a directory" in refusal(tmp_path / "nowhere", base)
    with pytest.raises(PeftConversionError, match="base model not found"):
        plan_peft(write_peft(tmp_path / "r"), tmp_path / "no-base.gguf")


def test_shape_mismatch_is_refused(base, tmp_path):
    tensors = lora_tensors()
    tensors[f"{PREFIX}.2.self_attn.v_proj.lora_B.weight"] = np.zeros((48, 4), np.float32)
    message = refusal(write_peft(tmp_path / "p", tensors), base)
    assert "shape mismatch" in message
    assert "model.layers.2.self_attn.v_proj" in message and "blk.2.attn_v.weight" in message


def test_rank_contradicting_config_is_refused(base, tmp_path):
    message = refusal(write_peft(tmp_path / "p", lora_tensors(rank=4), r=8), base)
    assert "adapter_config.json" in message and "rank 4, config r 8" in message


def test_incomplete_pair_is_refused(base, tmp_path):
    tensors = lora_tensors()
    del tensors[f"{PREFIX}.1.mlp.up_proj.lora_B.weight"]
    message = refusal(write_peft(tmp_path / "p", tensors), base)
    assert "model.layers.1.mlp.up_proj (lora_B missing)" in message


def test_other_peft_types_are_refused(base, tmp_path):
    message = refusal(write_peft(tmp_path / "p", peft_type="IA3"), base)
    assert "peft_type IA3" in message


def test_qk_on_an_architecture_of_unknown_layout_is_refused(base, tmp_path, monkeypatch):
    monkeypatch.setattr(peft, "QK_PERMUTED_ARCHS", frozenset())
    message = refusal(write_peft(tmp_path / "p"), base)
    assert "q/k" in message and "'llama'" in message and "self_attn.q_proj" in message
    # Without q/k targets the same adapter converts.
    plan_peft(write_peft(tmp_path / "vu", lora_tensors(
        modules={k: v for k, v in MODULES.items() if k in ("self_attn.v_proj", "mlp.up_proj")})),
        base)


def test_a_truncated_safetensors_file_is_refused(base, tmp_path):
    peft_dir = write_peft(tmp_path / "p")
    weights = peft_dir / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "bad data offsets" in refusal(peft_dir, base)


# --- the command ------------------------------------------------------------------------------

def run_cli(*args: str):
    return CliRunner().invoke(adapters, [str(a) for a in args])


def test_cli_import_writes_names_and_refuses_to_overwrite(base, tmp_path):
    peft_dir = write_peft(tmp_path / "my lora@v1")
    into = tmp_path / "adapters"
    result = run_cli("import", peft_dir, "--base", base, "--into", into)
    assert result.exit_code == 0, result.output
    out = into / "my-lora-v1.gguf"
    assert f"wrote {out}" in result.output and "12 LoRA pairs" in result.output
    assert sorted(p.name for p in into.iterdir()) == ["my-lora-v1.gguf"]  # no temp left
    info = validate_adapter(out, BaseModelInfo.from_gguf(base))
    assert info.rank == 4 and info.alpha == 8.0 and len(info.ranks) == 12
    first = out.read_bytes()

    other = write_peft(tmp_path / "other", lora_tensors(seed=9))
    result = run_cli("import", other, "--base", base, "--into", into, "--name", "my-lora-v1")
    assert result.exit_code != 0
    assert "already exists" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    assert out.read_bytes() == first

    result = run_cli("import", other, "--base", base, "--into", into, "--name", "my-lora-v1",
                     "--force")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != first
    assert sorted(p.name for p in into.iterdir()) == ["my-lora-v1.gguf"]


def test_cli_errors_are_one_line(base, tmp_path):
    into = tmp_path / "adapters"
    result = run_cli("import", write_peft(tmp_path / "d", use_dora=True), "--base", base,
                     "--into", into)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "DoRA" in result.output
    assert not into.exists() or list(into.iterdir()) == []
    result = run_cli("import", write_peft(tmp_path / "e"), "--base", base, "--into", into,
                     "--name", "../escape")
    assert result.exit_code != 0 and "--name" in result.output
    result = run_cli("import", write_peft(tmp_path / "f"), "--base", tmp_path / "nothing.gguf",
                     "--into", into)
    assert result.exit_code == 1 and "base model not found" in result.output
    assert result.output.count("\n") == 1


def test_adapter_names_follow_the_catalog_rule(tmp_path):
    assert adapter_name(tmp_path / "my lora@v1", None) == "my-lora-v1"
    assert adapter_name(tmp_path / ".hidden..name", None) == "hidden.name"
    assert adapter_name(tmp_path / "x", "sql.gguf") == "sql"
    for bad in ("../up", ".dot", "a/b", "a..b", ""):
        with pytest.raises(click.ClickException):
            adapter_name(tmp_path / "x", bad)
    with pytest.raises(click.ClickException, match="--name"):
        adapter_name(tmp_path / "@@@", None)


def test_cli_check_lists_valid_and_rejected(base, tmp_path):
    into = tmp_path / "adapters"
    assert run_cli("import", write_peft(tmp_path / "good"), "--base", base,
                   "--into", into).exit_code == 0
    (into / "broken.gguf").write_bytes(b"GGUF but not really")
    result = run_cli("check", into, "--base", base)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "1 valid, 1 rejected" in lines[0]
    assert any(line.split()[:2] == ["ok", "good"] and "rank 4" in line and "alpha 8" in line
               for line in lines)
    assert any(line.split()[:2] == ["rejected", "broken.gguf:"] for line in lines)
    (into / "broken.gguf").unlink()
    result = run_cli("check", into, "--base", base)
    assert result.exit_code == 0 and "1 valid, 0 rejected" in result.output
    result = run_cli("check", tmp_path / "none", "--base", base)
    assert result.exit_code == 1 and result.output.count("\n") == 1


def test_the_file_appears_only_whole_and_checked(base, tmp_path, monkeypatch):
    into = tmp_path / "adapters"
    out = into / "a.gguf"
    seen = []
    real_write = peft.write_lora_gguf

    def watching_write(conversion, path, name=None):
        # Written beside the target under a hidden temporary name; the target is not there yet.
        seen.append(Path(path))
        assert Path(path).parent == into and Path(path).name.startswith(".")
        assert not out.exists()
        real_write(conversion, path, name)

    with monkeypatch.context() as patch:
        patch.setattr(peft, "write_lora_gguf", watching_write)
        convert_peft(write_peft(tmp_path / "p"), base, out)
    assert out.exists() and len(seen) == 1 and not seen[0].exists()

    def failing_check(path, base_gguf):
        raise PeftConversionError(f"{path}: refused")

    monkeypatch.setattr(peft, "_validate", failing_check)
    with pytest.raises(PeftConversionError, match="refused"):
        convert_peft(write_peft(tmp_path / "q"), base, into / "b.gguf")
    assert sorted(p.name for p in into.iterdir()) == ["a.gguf"]  # nothing half-made left


def test_convert_without_overwrite_keeps_the_existing_file(base, tmp_path):
    out = tmp_path / "a.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(PeftConversionError, match="already exists"):
        convert_peft(write_peft(tmp_path / "p"), base, out, overwrite=False)
    assert out.read_bytes() == b"keep me"


# --- llama.cpp computes what PEFT would --------------------------------------------------------

def rms_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def hf_llama_logits(weights: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Last-token logits of a llama in Hugging Face's conventions (q/k rows in HF order,
    rotate_half rotary with base 10000, grouped-query attention), in float64."""
    n = len(tokens)
    x = weights["token_embd.weight"][tokens]
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    angles = np.outer(np.arange(n), inv_freq)
    cos, sin = np.cos(np.tile(angles, 2)), np.sin(np.tile(angles, 2))  # cat(freqs, freqs)
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for layer in range(N_LAYER):
        w = {key.split(".", 2)[2]: v for key, v in weights.items()
             if key.startswith(f"blk.{layer}.")}
        h = rms_norm(x) * w["attn_norm.weight"]
        q = (h @ w["attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM)
        k = (h @ w["attn_k.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        v = (h @ w["attn_v.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        group = N_HEAD // N_HEAD_KV
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(HEAD_DIM) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, N_HEAD * HEAD_DIM)
        x = x + attn @ w["attn_output.weight"].T
        h = rms_norm(x) * w["ffn_norm.weight"]
        gate = h @ w["ffn_gate.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w["ffn_up.weight"].T)) @ \
            w["ffn_down.weight"].T
    return (rms_norm(x[-1:]) * weights["output_norm.weight"]) @ weights["output.weight"].T


def test_llamacpp_with_the_converted_adapter_computes_the_peft_model(base, tmp_path,
                                                                      monkeypatch):
    from edge.backends.llama_api import (
        adapter_free,
        adapter_init,
        evaluate,
        load_model,
        set_adapters,
    )

    rank, alpha = 4, 8.0  # applied scale alpha / rank = 2: the alpha must be carried
    tensors = lora_tensors(rank=rank, seed=3)
    good = convert_peft(write_peft(tmp_path / "p", tensors, r=rank, lora_alpha=alpha), base,
                        tmp_path / "good.gguf")
    with monkeypatch.context() as patch:  # what a converter that forgot the q/k rule writes
        patch.setattr(peft, "permute_qk_rows", lambda b, n_head: b)
        wrong = convert_peft(write_peft(tmp_path / "w", tensors, r=rank, lora_alpha=alpha),
                             base, tmp_path / "wrong.gguf")

    # The base in HF's row order: undo the GGUF q/k permutation.
    gguf_weights = {t.name: np.array(t.data, dtype=np.float64)
                    for t in gguf.GGUFReader(str(base)).tensors}
    hf = dict(gguf_weights)
    for layer in range(N_LAYER):
        for target, heads in (("attn_q", N_HEAD), ("attn_k", N_HEAD_KV)):
            name = f"blk.{layer}.{target}.weight"
            order = rotary_row_order(gguf_weights[name].shape[0], heads)
            hf[name] = np.empty_like(gguf_weights[name])
            hf[name][order] = gguf_weights[name]
    # The PEFT model: W + (alpha / r) B @ A on the HF weights.
    peft_model = dict(hf)
    for layer in range(N_LAYER):
        for module, (target, _, _) in MODULES.items():
            stem = f"{PREFIX}.{layer}.{module}"
            peft_model[f"blk.{layer}.{target}.weight"] = (
                hf[f"blk.{layer}.{target}.weight"] + (alpha / rank)
                * tensors[f"{stem}.lora_B.weight"].astype(np.float64)
                @ tensors[f"{stem}.lora_A.weight"].astype(np.float64))

    tokens = [tiny.BOS, 300, 310, 320, 301, 333, 290, 305]
    base_ref = hf_llama_logits(hf, tokens)[0]
    peft_ref = hf_llama_logits(peft_model, tokens)[0]
    with load_model(base, n_ctx=64) as model:
        base_out = evaluate(model, tokens)
        results = {}
        for label, path in (("good", good), ("wrong", wrong)):
            adapter = adapter_init(model, path)
            set_adapters(model, [(adapter, 1.0)])
            results[label] = evaluate(model, tokens)
            set_adapters(model, [])
            adapter_free(adapter)

    def err(got, want):
        return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

    assert err(peft_ref, base_ref) > 0.1  # the adapter matters
    assert err(base_out, base_ref) < 5e-3  # the numpy reference is llama.cpp's model
    assert err(results["good"], peft_ref) < 5e-3
    assert err(results["wrong"], peft_ref) > 10 * max(err(results["good"], peft_ref), 1e-3)
