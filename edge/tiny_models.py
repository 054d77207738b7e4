"""Write a tiny llama-architecture base GGUF and LoRA adapter GGUFs for it, offline, in seconds.

The integration tests run real llama.cpp on these instead of a downloaded model. The base has the
llama layout (3 blocks, n_embd 64, F32 weights from a seeded RNG) and an SPM-style tokenizer with
all 256 byte tokens, so any text tokenizes. Each adapter is a LoRA in llama.cpp's GGUF adapter
format (what ``convert_lora_to_gguf.py`` writes) over the attention query/value and FFN up
projections of every block; ranks differ from adapter to adapter, so do file sizes.

    python scripts/make_tiny_models.py OUTDIR [--adapters N] [--seed S]

Benchmarks want adapters of realistic size (tens of MB), so the shape, the ranks and the LoRA
targets can be given; the defaults write exactly the tiny files above, byte for byte:

    python scripts/make_tiny_models.py OUTDIR --n-embd 1024 --n-layer 8 --n-ff 2816 \
        --n-head 16 --n-head-kv 4 --ranks 16,32,64 --targets all

or, from Python (the tests' fixture, ``edge demo``):

    from edge.tiny_models import make_tiny_models
    models = make_tiny_models(tmp_path, n_adapters=3, seed=0)   # TinyModels(base, adapters)

The same seed gives the same weights: the base draws from ``default_rng([seed, 0])``, adapter i
from ``default_rng([seed, i + 1])``, so adding adapters does not change the earlier ones.

MoE models for expert paging (``--moe``, or ``make_tiny_moe``): a Mixtral-style llama GGUF, 8
layers of 32 experts, top 4, experts stored as f32, f16, bf16 or q8_0; a structured one whose
router prefers one group of experts per token cluster (routing locality) and a plain-random one:

    from edge.tiny_models import make_tiny_moe
    moe = make_tiny_moe(tmp_path, structured=True, seed=0, dtype="q8_0")   # TinyMoe(path, ...)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
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
# Every projection of a block: what PEFT's target_modules="all-linear" adapts.
ALL_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
ADAPTER_RANKS = (4, 16, 8, 2, 32)
# Spread of B's entries. With alpha = rank (applied scale 1) this moves each targeted projection
# by about half its own size: enough that attaching an adapter changes the logits clearly.
LORA_B_STD = 0.5

UNK, BOS, EOS = 0, 1, 2
SPACE = "\u2581"  # SentencePiece's visible space


@dataclass(frozen=True)
class Shape:
    """The base model's dimensions; the defaults are the tiny test model's."""

    n_embd: int = N_EMBD
    n_layer: int = N_LAYER
    n_head: int = N_HEAD
    n_head_kv: int = N_HEAD_KV
    n_ff: int = N_FF
    n_ctx_train: int = N_CTX_TRAIN  # metadata only; llama.cpp warns when a context exceeds it

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_ctx_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head "
                             f"({self.n_head}), and n_head of n_head_kv ({self.n_head_kv})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


DEFAULT_SHAPE = Shape()


@dataclass(frozen=True)
class TinyModels:
    base: Path
    adapters: list[Path]
    shape: Shape = field(default=DEFAULT_SHAPE, compare=False)


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


def base_tensor_shapes(n_vocab: int, shape: Shape = DEFAULT_SHAPE
                       ) -> dict[str, tuple[int, ...]]:
    """Every tensor of the base in numpy (row-major) terms: a projection is (n_out, n_in)."""
    d, ff, q, kv = shape.n_embd, shape.n_ff, shape.n_head * shape.head_dim, \
        shape.n_head_kv * shape.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_vocab, d),
        "output_norm.weight": (d,),
        "output.weight": (n_vocab, d),
    }
    for i in range(shape.n_layer):
        shapes.update({
            f"blk.{i}.attn_norm.weight": (d,),
            f"blk.{i}.attn_q.weight": (q, d),
            f"blk.{i}.attn_k.weight": (kv, d),
            f"blk.{i}.attn_v.weight": (kv, d),
            f"blk.{i}.attn_output.weight": (d, q),
            f"blk.{i}.ffn_norm.weight": (d,),
            f"blk.{i}.ffn_gate.weight": (ff, d),
            f"blk.{i}.ffn_up.weight": (ff, d),
            f"blk.{i}.ffn_down.weight": (d, ff),
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


def write_base(path: Path, seed: int, shape: Shape = DEFAULT_SHAPE) -> None:
    rng = np.random.default_rng([seed, 0])
    tokens, scores, types = tokenizer_vocab()
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_name("edge-tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.head_dim)
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
    for name, dims in base_tensor_shapes(len(tokens), shape).items():
        if len(dims) == 1:  # RMS norm gains
            data = np.ones(dims, dtype=np.float32)
        else:  # 1/sqrt(n_in) keeps activations near unit scale through the blocks
            data = rng.normal(0.0, 1.0 / np.sqrt(dims[1]), size=dims).astype(np.float32)
        w.add_tensor(name, data)
    _write(w, tmp, path)


def write_adapter(path: Path, seed: int, index: int, rank: int, shape: Shape = DEFAULT_SHAPE,
                  targets: tuple[str, ...] = ADAPTER_TARGETS) -> None:
    """One LoRA adapter: ``<base>.lora_a`` is (rank, n_in) and ``<base>.lora_b`` (n_out, rank)
    in numpy terms; alpha = rank, so llama.cpp's applied scale (user scale * alpha / rank) is the
    user scale."""
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of {ALL_TARGETS}, "
                         f"got {tuple(targets)}")
    rng = np.random.default_rng([seed, index + 1])
    shapes = base_tensor_shapes(len(tokenizer_vocab()[0]), shape)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(f"edge-tiny-lora-{index}")
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for i in range(shape.n_layer):
        for target in targets:
            name = f"blk.{i}.{target}.weight"
            n_out, n_in = shapes[name]
            a = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(rank, n_in)).astype(np.float32)
            b = rng.normal(0.0, LORA_B_STD / np.sqrt(rank), size=(n_out, rank)).astype(np.float32)
            w.add_tensor(f"{name}.lora_a", a)
            w.add_tensor(f"{name}.lora_b", b)
    _write(w, tmp, path)


def make_tiny_models(outdir: str | os.PathLike[str], n_adapters: int = 3, seed: int = 0, *,
                     shape: Shape = DEFAULT_SHAPE, ranks: tuple[int, ...] = ADAPTER_RANKS,
                     targets: tuple[str, ...] = ADAPTER_TARGETS) -> TinyModels:
    """Write ``base.gguf`` and ``lora-<i>-r<rank>.gguf`` (i < n_adapters) into ``outdir``;
    adapter i has rank ``ranks[i % len(ranks)]``."""
    if n_adapters < 0:
        raise ValueError(f"n_adapters must be >= 0, got {n_adapters}")
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"ranks must be positive integers, got {ranks!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base.gguf"
    write_base(base, seed, shape)
    adapters = []
    for i in range(n_adapters):
        rank = ranks[i % len(ranks)]
        path = out / f"lora-{i}-r{rank}.gguf"
        write_adapter(path, seed, i, rank, shape, tuple(targets))
        adapters.append(path)
    return TinyModels(base=base, adapters=adapters, shape=shape)


# ---- MoE test models -------------------------------------------------------------------------
# A Mixtral-style model is the llama architecture with <arch>.expert_count/expert_used_count, a
# router per block (blk.N.ffn_gate_inp) and the experts' FFNs stacked in one tensor per
# projection (blk.N.ffn_{gate,up,down}_exps); llama.cpp runs it as llama (FIELD-NOTES "MoE in
# GGUF").
MOE_N_LAYER = 8
MOE_N_EXPERT = 32
MOE_N_EXPERT_USED = 4
MOE_N_FF = 128
# The expert tensors' storage type; every other tensor stays F32, so a disagreement with
# llama.cpp points at the expert bytes, the ones the expert store pages.
MOE_DTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
# Structured routing: every token belongs to one of n_expert / (2 * n_expert_used) clusters, and
# in each layer each cluster prefers its own group of 2 * n_expert_used experts (the paper's
# "about 2x the active experts" working set). The embedding puts the cluster's direction in the
# residual stream, the router adds MOE_ROUTER_PULL per unit of alignment to the group's experts,
# and the output head favours next tokens of the current cluster, so generated text runs in
# segments of one cluster and consecutive tokens reuse experts.
MOE_EMBD_CLUSTER = 2.0  # cluster direction's weight per sqrt(n_embd) in a token's embedding
MOE_EMBD_NOISE = 0.5  # the token's own random part, same units
MOE_ROUTER_PULL = 0.6  # router logit per unit of (RMS-normed hidden . cluster direction)
MOE_OUTPUT_PULL = 0.5  # output logit, same units: the pull towards staying in the cluster
# Attention and expert outputs enter the residual stream at this fraction of unit scale, so the
# token's cluster still dominates the router's input after the earlier blocks.
MOE_BRANCH_SCALE = 0.25


@dataclass(frozen=True)
class MoeShape:
    """A tiny MoE model's dimensions; the defaults are the tests' 8 layers x 32 experts, top 4."""

    n_embd: int = N_EMBD
    n_layer: int = MOE_N_LAYER
    n_head: int = N_HEAD
    n_head_kv: int = N_HEAD_KV
    n_ff: int = MOE_N_FF  # per expert
    n_expert: int = MOE_N_EXPERT
    n_expert_used: int = MOE_N_EXPERT_USED
    n_ctx_train: int = N_CTX_TRAIN

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_expert",
                     "n_expert_used", "n_ctx_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head "
                             f"({self.n_head}), and n_head of n_head_kv ({self.n_head_kv})")
        if self.n_expert_used > self.n_expert:
            raise ValueError(f"n_expert_used ({self.n_expert_used}) must be <= n_expert "
                             f"({self.n_expert})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_clusters(self) -> int:
        return max(1, self.n_expert // (2 * self.n_expert_used))


@dataclass(frozen=True)
class TinyMoe:
    path: Path
    shape: MoeShape
    structured: bool
    dtype: str
    # Structured models: each token's cluster (n_vocab,) and, per layer, each cluster's
    # preferred experts (n_layer, n_clusters, experts per group); None for plain-random ones.
    token_cluster: np.ndarray | None = field(default=None, compare=False, repr=False)
    cluster_experts: np.ndarray | None = field(default=None, compare=False, repr=False)


def _moe_expert_tensor(data: np.ndarray, dtype: str
                       ) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    qtype = MOE_DTYPES[dtype][0]
    if dtype in ("f32", "f16"):
        return data.astype(np.float16 if dtype == "f16" else np.float32), qtype
    return gguf.quants.quantize(data, qtype), qtype  # uint8 blocks in the type's byte layout


def _unit_directions(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n orthonormal directions (rows) when n <= dim, else n random unit vectors."""
    raw = rng.normal(size=(dim, max(n, 1)))
    if n <= dim:
        q, _ = np.linalg.qr(raw)
        return q[:, :n].T.copy()
    return (raw / np.linalg.norm(raw, axis=0)).T[:n].copy()


def make_tiny_moe(outdir: str | os.PathLike[str], *, structured: bool, seed: int = 0,
                  n_layer: int = MOE_N_LAYER, n_expert: int = MOE_N_EXPERT,
                  n_expert_used: int = MOE_N_EXPERT_USED, n_embd: int = N_EMBD,
                  n_ff: int = MOE_N_FF, n_head: int = N_HEAD, n_head_kv: int = N_HEAD_KV,
                  dtype: str = "f32") -> TinyMoe:
    """Write ``moe-structured-<dtype>.gguf`` or ``moe-random-<dtype>.gguf`` into ``outdir``: a
    Mixtral-style llama MoE whose experts are stored as ``dtype`` (f32, f16, bf16, q8_0).

    ``structured``: the router has locality (see MOE_EMBD_CLUSTER above); otherwise embedding,
    router and output head are plain random and routing has no structure to exploit. The same
    arguments write the same bytes; the weights draw from ``default_rng([seed, 100 + variant])``,
    apart from the base's and adapters' streams."""
    if dtype not in MOE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(MOE_DTYPES)}, got {dtype!r}")
    shape = MoeShape(n_embd, n_layer, n_head, n_head_kv, n_ff, n_expert, n_expert_used)
    if dtype == "q8_0" and (n_embd % 32 or n_ff % 32):
        raise ValueError(f"q8_0 stores rows in blocks of 32: n_embd ({n_embd}) and n_ff "
                         f"({n_ff}) must be multiples of 32")
    rng = np.random.default_rng([seed, 100 + int(bool(structured))])
    tokens, scores, types = tokenizer_vocab()
    n_vocab, d, ff, hd = len(tokens), shape.n_embd, shape.n_ff, shape.head_dim
    n_clusters, group = shape.n_clusters, min(2 * n_expert_used, n_expert)
    root_d = np.sqrt(d)

    def normal(*dims: int, scale: float = 1.0) -> np.ndarray:
        return rng.normal(0.0, scale / np.sqrt(dims[-1]), size=dims).astype(np.float32)

    token_cluster = cluster_experts = None
    if structured:
        directions = _unit_directions(rng, n_clusters, d)
        token_cluster = rng.integers(n_clusters, size=n_vocab)
        embd = (MOE_EMBD_CLUSTER * root_d * directions[token_cluster]
                + MOE_EMBD_NOISE * rng.normal(size=(n_vocab, d))).astype(np.float32)
        output = (MOE_OUTPUT_PULL * directions[token_cluster]
                  + normal(n_vocab, d, scale=0.5)).astype(np.float32)
        cluster_experts = np.empty((n_layer, n_clusters, group), dtype=np.int64)
    else:
        embd = rng.normal(size=(n_vocab, d)).astype(np.float32)
        output = normal(n_vocab, d)

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"moe-{'structured' if structured else 'random'}-{dtype}.gguf"
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_name(f"edge-tiny-moe-{'structured' if structured else 'random'}")
    w.add_file_type(MOE_DTYPES[dtype][1])
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(d)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(n_expert)
    w.add_expert_used_count(n_expert_used)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    w.add_tensor("output.weight", output)
    branch = MOE_BRANCH_SCALE
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", normal(n_head * hd, d))
        w.add_tensor(f"blk.{i}.attn_k.weight", normal(n_head_kv * hd, d))
        w.add_tensor(f"blk.{i}.attn_v.weight", normal(n_head_kv * hd, d))
        w.add_tensor(f"blk.{i}.attn_output.weight", normal(d, n_head * hd, scale=branch))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, dtype=np.float32))
        router = normal(n_expert, d)
        if structured:
            # This layer's experts, shuffled, cut into one group per cluster (spares stay
            # unpreferred); the layers differ, so cross-layer transitions carry information.
            order = rng.permutation(n_expert)
            for c in range(n_clusters):
                chosen = order[c * group:(c + 1) * group]
                cluster_experts[i, c] = chosen
                router[chosen] += MOE_ROUTER_PULL * directions[c]
        w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", router)
        for name, dims, scale in (("ffn_gate_exps", (n_expert, ff, d), 1.0),
                                  ("ffn_up_exps", (n_expert, ff, d), 1.0),
                                  ("ffn_down_exps", (n_expert, d, ff), branch)):
            data, qtype = _moe_expert_tensor(normal(*dims, scale=scale), dtype)
            w.add_tensor(f"blk.{i}.{name}.weight", data, raw_dtype=qtype)
    _write(w, tmp, path)
    return TinyMoe(path=path, shape=shape, structured=bool(structured), dtype=dtype,
                   token_cluster=token_cluster, cluster_experts=cluster_experts)


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _targets(text: str) -> tuple[str, ...]:
    return ALL_TARGETS if text == "all" else tuple(text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--adapters", type=int, default=3, help="number of LoRA adapters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-embd", type=int, default=N_EMBD)
    parser.add_argument("--n-layer", type=int, default=N_LAYER)
    parser.add_argument("--n-head", type=int, default=N_HEAD)
    parser.add_argument("--n-head-kv", type=int, default=N_HEAD_KV)
    parser.add_argument("--n-ff", type=int, default=N_FF)
    parser.add_argument("--n-ctx-train", type=int, default=N_CTX_TRAIN)
    parser.add_argument("--ranks", type=_int_list, default=ADAPTER_RANKS,
                        help="comma-separated LoRA ranks, cycled over the adapters")
    parser.add_argument("--targets", type=_targets, default=ADAPTER_TARGETS,
                        help=f"comma-separated projections to adapt, or 'all' "
                             f"({','.join(ALL_TARGETS)}); default {','.join(ADAPTER_TARGETS)}")
    parser.add_argument("--moe", action="store_true",
                        help=f"also write moe-structured-<dtype>.gguf and "
                             f"moe-random-<dtype>.gguf ({MOE_N_LAYER} layers, {MOE_N_EXPERT} "
                             f"experts, top {MOE_N_EXPERT_USED})")
    parser.add_argument("--moe-dtype", choices=sorted(MOE_DTYPES), default="f32",
                        help="storage type of the MoE models' experts (default f32)")
    args = parser.parse_args(argv)
    try:
        shape = Shape(args.n_embd, args.n_layer, args.n_head, args.n_head_kv, args.n_ff,
                      args.n_ctx_train)
        models = make_tiny_models(args.outdir, n_adapters=args.adapters, seed=args.seed,
                                  shape=shape, ranks=args.ranks, targets=args.targets)
        moe = [make_tiny_moe(args.outdir, structured=kind, seed=args.seed,
                             dtype=args.moe_dtype).path for kind in (True, False)] \
            if args.moe else []
    except ValueError as exc:
        parser.error(str(exc))
    for path in [models.base, *models.adapters, *moe]:
        print(f"{path}\t{path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
