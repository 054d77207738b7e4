"""Write a tiny llama-architecture base GGUF and LoRA adapter GGUFs for it, offline, in seconds.

The integration tests run real llama.cpp on these instead of a downloaded model. The base has the
llama layout (3 blocks, n_embd 64, F32 weights from a seeded RNG) and an SPM-style tokenizer with
all 256 byte tokens, so any text tokenizes. Each adapter is a LoRA in llama.cpp's GGUF adapter
format (what ``convert_lora_to_gguf.py`` writes) over the attention query/value and FFN up
projections of every block; ranks differ from adapter to adapter, so do file sizes.

    python scripts/make_tiny_models.py OUTDIR [--adapters N] [--seed S]

or, from a test:

    sys.path.insert(0, "scripts"); from make_tiny_models import make_tiny_models
    models = make_tiny_models(tmp_path, n_adapters=3, seed=0)   # TinyModels(base, adapters)

The same seed gives the same weights: the base draws from ``default_rng([seed, 0])``, adapter i
from ``default_rng([seed, i + 1])``, so adding adapters does not change the earlier ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
N_EMBD = 64
N_LAYER = 3
N_HEAD = 4
N_HEAD_KV = 2  # grouped-query attention, as in current llama models: K/V narrower than Q
N_FF = 128
N_CTX_TRAIN = 512
HEAD_DIM = N_EMBD // N_HEAD

# LoRA targets and ranks. Ranks cycle so adapters differ in size, the way a real library does.
ADAPTER_TARGETS = ("attn_q", "attn_v", "ffn_up")
ADAPTER_RANKS = (4, 16, 8, 2, 32)
# Spread of B's entries. With alpha = rank (applied scale 1) this moves each targeted projection
# by about half its own size: enough that attaching an adapter changes the logits clearly.
LORA_B_STD = 0.5

UNK, BOS, EOS = 0, 1, 2
SPACE = "\u2581"  # SentencePiece's visible space


@dataclass(frozen=True)
class TinyModels:
    base: Path
    adapters: list[Path]


def tokenizer_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of an SPM vocabulary: specials, 256 byte-fallback tokens,
    then single characters and a few merges. llama.cpp's SPM tokenizer merges the adjacent pair
    whose concatenation is in the vocabulary with the highest score; a character that is not in it
    falls back to its UTF-8 bytes, which is why every text tokenizes."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    chars = [SPACE, *"abcdefghijklmnopqrstuvwxyz", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
             *"0123456789", *".,:;!?'\"-()"]
    merges = ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd",
              f"{SPACE}t", f"{SPACE}a", f"{SPACE}i", f"{SPACE}s", f"{SPACE}o", f"{SPACE}w",
              f"{SPACE}the", f"{SPACE}and", f"{SPACE}is", f"{SPACE}in", f"{SPACE}of",
              f"{SPACE}to", f"{SPACE}it", "ing", "ed", "es"]
    pieces = chars + merges
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # Specials and bytes never win a merge; among pieces, longer ones are preferred.
    scores = [0.0] * (3 + 256) + [-100.0 + len(p) for p in pieces]
    return tokens, scores, [int(t) for t in types]


def base_tensor_shapes(n_vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the base in numpy (row-major) terms: a projection is (n_out, n_in)."""
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_vocab, N_EMBD),
        "output_norm.weight": (N_EMBD,),
        "output.weight": (n_vocab, N_EMBD),
    }
    for i in range(N_LAYER):
        shapes.update({
            f"blk.{i}.attn_norm.weight": (N_EMBD,),
            f"blk.{i}.attn_q.weight": (N_HEAD * HEAD_DIM, N_EMBD),
            f"blk.{i}.attn_k.weight": (N_HEAD_KV * HEAD_DIM, N_EMBD),
            f"blk.{i}.attn_v.weight": (N_HEAD_KV * HEAD_DIM, N_EMBD),
            f"blk.{i}.attn_output.weight": (N_EMBD, N_HEAD * HEAD_DIM),
            f"blk.{i}.ffn_norm.weight": (N_EMBD,),
            f"blk.{i}.ffn_gate.weight": (N_FF, N_EMBD),
            f"blk.{i}.ffn_up.weight": (N_FF, N_EMBD),
            f"blk.{i}.ffn_down.weight": (N_EMBD, N_FF),
        })
    return shapes


def _write(writer: gguf.GGUFWriter, tmp: Path, path: Path) -> None:
    # Written under a temporary name and renamed, so an interrupted run leaves no truncated
    # .gguf that a later test would try to load.
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)


def write_base(path: Path, seed: int) -> None:
    rng = np.random.default_rng([seed, 0])
    tokens, scores, types = tokenizer_vocab()
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_name("edge-tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")  # llama.cpp's name for SentencePiece (SPM)
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)
    for name, shape in base_tensor_shapes(len(tokens)).items():
        if len(shape) == 1:  # RMS norm gains
            data = np.ones(shape, dtype=np.float32)
        else:  # 1/sqrt(n_in) keeps activations near unit scale through the blocks
            data = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), size=shape).astype(np.float32)
        w.add_tensor(name, data)
    _write(w, tmp, path)


def write_adapter(path: Path, seed: int, index: int, rank: int) -> None:
    """One LoRA adapter: ``<base>.lora_a`` is (rank, n_in) and ``<base>.lora_b`` (n_out, rank)
    in numpy terms; alpha = rank, so llama.cpp's applied scale (user scale * alpha / rank) is the
    user scale."""
    rng = np.random.default_rng([seed, index + 1])
    shapes = base_tensor_shapes(len(tokenizer_vocab()[0]))
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(f"edge-tiny-lora-{index}")
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for i in range(N_LAYER):
        for target in ADAPTER_TARGETS:
            name = f"blk.{i}.{target}.weight"
            n_out, n_in = shapes[name]
            a = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(rank, n_in)).astype(np.float32)
            b = rng.normal(0.0, LORA_B_STD / np.sqrt(rank), size=(n_out, rank)).astype(np.float32)
            w.add_tensor(f"{name}.lora_a", a)
            w.add_tensor(f"{name}.lora_b", b)
    _write(w, tmp, path)


def make_tiny_models(outdir: str | os.PathLike[str], n_adapters: int = 3,
                     seed: int = 0) -> TinyModels:
    """Write ``base.gguf`` and ``lora-<i>-r<rank>.gguf`` (i < n_adapters) into ``outdir``."""
    if n_adapters < 0:
        raise ValueError(f"n_adapters must be >= 0, got {n_adapters}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base.gguf"
    write_base(base, seed)
    adapters = []
    for i in range(n_adapters):
        rank = ADAPTER_RANKS[i % len(ADAPTER_RANKS)]
        path = out / f"lora-{i}-r{rank}.gguf"
        write_adapter(path, seed, i, rank)
        adapters.append(path)
    return TinyModels(base=base, adapters=adapters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--adapters", type=int, default=3, help="number of LoRA adapters")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = make_tiny_models(args.outdir, n_adapters=args.adapters, seed=args.seed)
    for path in [models.base, *models.adapters]:
        print(f"{path}\t{path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
