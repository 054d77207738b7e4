"""``edge adapters list | check | verify`` on a directory of the tiny adapters plus files that
break one rule each: not a GGUF at all, another architecture's adapter, and a well-formed adapter
whose weights hold a NaN (only running it through llama.cpp can find that one).

Expected figures are worked out by hand from the tiny models' shapes (scripts/make_tiny_models.py:
n_embd 64, 3 blocks, LoRA on attn_q (64x64), attn_v (32x64) and ffn_up (128x64), F32, alpha =
rank), not read from the catalog.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main

RANKS = {"lora-0-r4": 4, "lora-1-r16": 16, "lora-2-r8": 8}
# Per rank: 3 blocks x 4 bytes x r x (n_in + n_out) summed over the targets.
BYTES_PER_RANK = 3 * 4 * ((64 + 64) + (64 + 32) + (64 + 128))


def write_lora(path: Path, arch: str, *, nan: bool = False) -> Path:
    """A rank-2 LoRA on blk.0.attn_q as convert_lora_to_gguf.py writes one."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 64)).astype(np.float32)
    b = rng.normal(size=(64, 2)).astype(np.float32)
    if nan:
        b[3, 1] = np.nan
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type("adapter")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 2.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", a)
    writer.add_tensor("blk.0.attn_q.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def adapter_dir(tmp_path, tiny_models) -> Path:
    directory = tmp_path / "adapters"
    directory.mkdir()
    for path in tiny_models.adapters:
        shutil.copy(path, directory / path.name)
    (directory / "lora-2-r8.yaml").write_text("scale: 0.5\n")
    return directory


@pytest.fixture
def mixed_dir(adapter_dir) -> Path:
    """The good adapters, a corrupt file, a qwen2 adapter and a NaN one."""
    (adapter_dir / "corrupt.gguf").write_bytes(b"GGUF but not really")
    write_lora(adapter_dir / "qwen.gguf", "qwen2")
    write_lora(adapter_dir / "poisoned.gguf", "llama", nan=True)
    return adapter_dir


def edge(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def table(output: str) -> dict[str, list[str]]:
    """The table rows of ``adapters list``, keyed by their file column."""
    rows = [line.split() for line in output.splitlines()[2:]]
    return {row[1]: row for row in rows}


def test_list_shows_accepted_and_refused_with_reasons(mixed_dir, tiny_models):
    result = edge("adapters", "list", mixed_dir, "--model", tiny_models.base)
    assert result.exit_code == 0, result.output  # a listing, not a check
    lines = result.output.splitlines()
    # The NaN adapter's header is fine: list reads headers only.
    assert lines[0] == (f"{mixed_dir}: 4 valid, 2 refused (base base.gguf, architecture "
                        "llama)")
    assert lines[1].split() == ["name", "file", "size", "rank", "alpha", "scale", "arch",
                                "valid"]
    rows = table(result.output)
    for name, rank in RANKS.items():
        size = f"{BYTES_PER_RANK * rank / 1024:.1f}"
        scale = "0.5" if name == "lora-2-r8" else "1"
        assert rows[f"{name}.gguf"] == [name, f"{name}.gguf", size, "KiB", str(rank), str(rank),
                                        scale, "llama", "yes"]
    assert rows["poisoned.gguf"][-1] == "yes"
    assert rows["corrupt.gguf"][:3] == ["-", "corrupt.gguf", "-"]
    corrupt = lines[[i for i, line in enumerate(lines) if "corrupt.gguf" in line][0]]
    assert "no: not a readable GGUF file" in corrupt
    qwen = [line for line in lines if "qwen.gguf" in line][0]
    assert "no: architecture 'qwen2' does not match the base model's 'llama'" in qwen


def test_list_json_has_the_same_rows(mixed_dir, tiny_models):
    result = edge("adapters", "list", mixed_dir, "--model", tiny_models.base, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["architecture"] == "llama" and data["directory"] == str(mixed_dir)
    rows = {row["file"]: row for row in data["adapters"]}
    assert set(rows) == {*(f"{n}.gguf" for n in RANKS), "poisoned.gguf", "corrupt.gguf",
                         "qwen.gguf"}
    for name, rank in RANKS.items():
        row = rows[f"{name}.gguf"]
        assert row["valid"] is True and row["reason"] is None and row["name"] == name
        assert row["size_bytes"] == BYTES_PER_RANK * rank
        assert row["rank"] == rank and row["alpha"] == rank
        assert row["scale"] == (0.5 if name == "lora-2-r8" else 1.0)
        assert row["file_bytes"] == (mixed_dir / f"{name}.gguf").stat().st_size
    assert rows["poisoned.gguf"]["size_bytes"] == 4 * 2 * (64 + 64)
    assert rows["qwen.gguf"]["valid"] is False
    assert "'qwen2'" in rows["qwen.gguf"]["reason"]
    assert rows["corrupt.gguf"]["valid"] is False and rows["corrupt.gguf"]["name"] is None


def test_verify_loads_each_into_llama_cpp_and_fails_on_any(mixed_dir, tiny_models):
    result = edge("adapters", "verify", mixed_dir, "--model", tiny_models.base)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    by_file = {}
    for line in lines[:-1]:
        status, label = line.split()[:2]
        by_file[label.rstrip(":")] = (status, line)
    assert set(by_file) == {*RANKS, "poisoned", "corrupt.gguf", "qwen.gguf"}
    for name in RANKS:
        assert by_file[name][0] == "OK", by_file[name]
    # Header-valid, but llama.cpp's logits under it are NaN: only loading it finds that.
    assert by_file["poisoned"][0] == "FAIL" and "non-finite" in by_file["poisoned"][1]
    assert by_file["corrupt.gguf"][0] == "FAIL"
    assert "not a readable GGUF file" in by_file["corrupt.gguf"][1]
    assert by_file["qwen.gguf"][0] == "FAIL" and "'qwen2'" in by_file["qwen.gguf"][1]
    assert lines[-1] == f"{mixed_dir}: 3 of 6 adapter files verified"


def test_verify_passes_a_good_directory(adapter_dir, tiny_models):
    result = edge("adapters", "verify", adapter_dir, "--base", tiny_models.base)
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.output.splitlines()[:-1]] == [
        ["OK", name] for name in sorted(RANKS)]
    assert result.output.splitlines()[-1] == f"{adapter_dir}: 3 of 3 adapter files verified"


def test_check_still_works_and_takes_model_too(mixed_dir, tiny_models):
    for option in ("--base", "--model"):
        result = edge("adapters", "check", mixed_dir, option, tiny_models.base)
        assert result.exit_code == 1, result.output
        assert "4 valid, 2 rejected" in result.output.splitlines()[0]
        assert any(line.split()[:2] == ["rejected", "qwen.gguf:"]
                   for line in result.output.splitlines())


def test_errors_are_one_line(tmp_path, tiny_models, adapter_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = edge("adapters", "verify", empty, "--model", tiny_models.base)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "nothing to verify" in result.output
    for command in ("list", "verify"):
        result = edge("adapters", command, tmp_path / "missing", "--model", tiny_models.base)
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert "missing" in result.output and "Traceback" not in result.output
        # An adapter given as the base model.
        result = edge("adapters", command, adapter_dir, "--model",
                      adapter_dir / "lora-0-r4.gguf")
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert "this is an adapter, not a base model" in result.output
