"""``MoeModel``: the whole forward pass of a llama-architecture MoE GGUF in numpy, with the
experts paged from disk through a ``PagedCache`` and everything else resident.

The graph is llama.cpp's for ``llama`` (src/models/llama.cpp): token embedding; per block,
RMSNorm, rotary attention (llama's "normal" RoPE: adjacent pairs rotated, base
``rope.freq_base``, default 10000) with grouped K/V heads over a KV cache, residual, RMSNorm,
the MoE FFN (``ExpertExecutor``), residual; final RMSNorm and the output head. Its next-token
logits match llama.cpp's on the same file to float32 rounding and llama.cpp's f16 KV cache (the
tests state the tolerance): the proof that the expert store reads the right bytes.

Dense tensors are read once through the expert store (``ExpertStore.read_tensor``: positional
reads, any type ``gguf.quants.dequantize`` knows) and kept as float32; the file is never mapped,
so with ``page_cache=False`` nothing reads around them into the OS page cache.

    with MoeModel.open("moe.gguf", budget="2MiB", policy="lru") as model:
        tokens = model.generate([1, 300, 301], max_tokens=16)
        print(model.counters())      # hits, misses, bytes read

With ``prefetch=True`` (or ``"load"``) each MoE layer predicts the next layer's experts and loads
them on the cache's background workers; with ``prefetch="readahead"`` the kernel reads them into
the OS page cache instead (``edge.moe.prefetch``; ``predictor`` picks how they are predicted).
Outputs are the same with and without; ``prefetch_counters()`` says how well it predicted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.backends.experts import ExpertStore, MoeFormatError
from edge.moe.executor import ExpertExecutor, LayerHook, RunCounters
from edge.moe.prefetch import PrefetchCounters, Prefetcher

DEFAULT_ROPE_BASE = 10000.0
DEFAULT_RMS_EPS = 1e-5
SUPPORTED_ARCHS = ("llama",)


@dataclass(frozen=True)
class ModelParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rope_base: float
    rms_eps: float


class DenseWeights:
    """The non-expert tensors, float32, resident."""

    def __init__(self, store: ExpertStore, n_layer: int) -> None:
        get = store.read_tensor
        self.token_embd = get("token_embd.weight")
        self.output_norm = get("output_norm.weight")
        # llama.cpp falls back to the embedding when a model ties its output head to it.
        self.output = get("output.weight") if store.has_tensor("output.weight") \
            else self.token_embd
        self.blocks = [{part: get(f"blk.{i}.{part}.weight") for part in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm")}
            for i in range(n_layer)]


def read_params(store: ExpertStore, dense: DenseWeights) -> ModelParams:
    layout, meta = store.layout, store.layout.metadata
    if layout.arch not in SUPPORTED_ARCHS:
        raise MoeFormatError(f"{store.path}: architecture {layout.arch!r}; the numpy forward "
                             f"pass implements {', '.join(SUPPORTED_ARCHS)}")
    if layout.moe_layers != tuple(range(layout.n_layer)):
        raise MoeFormatError(f"{store.path}: only blocks {list(layout.moe_layers)} are MoE; "
                             "the forward pass expects every block to be")
    n_head = int(meta.get("attention.head_count", 0))
    n_head_kv = int(meta.get("attention.head_count_kv", n_head))
    if n_head < 1 or layout.n_embd % n_head or n_head % n_head_kv:
        raise MoeFormatError(f"{store.path}: attention.head_count {n_head} / head_count_kv "
                             f"{n_head_kv} do not divide n_embd {layout.n_embd}")
    head_dim = layout.n_embd // n_head
    n_rot = int(meta.get("rope.dimension_count", head_dim))
    if n_rot != head_dim:
        raise MoeFormatError(f"{store.path}: rope.dimension_count {n_rot} != head size "
                             f"{head_dim} (llama requires them equal)")
    return ModelParams(
        n_vocab=dense.token_embd.shape[0], n_embd=layout.n_embd, n_layer=layout.n_layer,
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_rot=n_rot,
        rope_base=float(meta.get("rope.freq_base", DEFAULT_ROPE_BASE)),
        rms_eps=float(meta.get("attention.layer_norm_rms_epsilon", DEFAULT_RMS_EPS)))


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * weight


def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """llama's rotary embedding on (n_tokens, n_heads, head_dim): pairs (2i, 2i+1) turn by
    pos * base ** (-2i / head_dim)."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2.0 / x.shape[-1])
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    cos = np.cos(angles).astype(np.float32)[:, None, :]
    sin = np.sin(angles).astype(np.float32)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


class MoeModel:
    """A llama MoE model: dense weights resident, experts through ``executor``'s cache.

    ``eval(tokens)`` appends tokens to the KV cache and returns the last one's logits;
    ``reset()`` empties the KV cache. With ``record_routing`` every evaluated token's experts
    are kept: ``routing()`` is the (tokens, layers, top_k) array of ``edge.moe.traces``. Not
    thread-safe: one generation at a time."""

    def __init__(self, store: ExpertStore, cache, *, n_ctx: int = 512,
                 on_layer: LayerHook | None = None, record_routing: bool = False,
                 prefetch: bool | str = False, predictor: str = "router",
                 owns: bool = False) -> None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        mode = {False: None, "off": None, True: "load", "load": "load",
                "readahead": "readahead"}.get(prefetch, "?")
        if mode == "?":
            raise ValueError(f"prefetch must be False, True, 'load' or 'readahead', got "
                             f"{prefetch!r}")
        self.store = store
        self.cache = cache
        self.dense = DenseWeights(store, store.n_layer)
        self.params = read_params(store, self.dense)
        self.executor = ExpertExecutor(store, cache, on_layer=on_layer)
        if mode is not None:
            executor = self.executor
            # The next layer's router input is RMSNorm(residual) * its ffn_norm weight; the
            # RMS divides a token's logits by a positive number, which changes no top k.
            self.executor.prefetcher = Prefetcher(
                cache, store, executor.routers, executor.k, predictor=predictor,
                normalise=lambda layer, x: x * self.dense.blocks[layer]["ffn_norm"], mode=mode)
            executor.reset_counters()
        self.n_ctx = n_ctx
        p = self.params
        self._k = np.zeros((p.n_layer, n_ctx, p.n_head_kv, p.head_dim), dtype=np.float32)
        self._v = np.zeros_like(self._k)
        self.n_past = 0
        self._owns = owns
        self._routing: list[np.ndarray] | None = [] if record_routing else None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, budget: int | str, policy: str = "lru",
             n_ctx: int = 512, load_workers: int = 0, on_layer: LayerHook | None = None,
             policy_params: dict | None = None, record_routing: bool = False,
             prefetch: bool | str = False, predictor: str = "router",
             page_cache: bool = True) -> MoeModel:
        """A model with its own store (``ExpertStore(path, page_cache=page_cache)``) and cache
        (both closed with the model)."""
        from edge.cache import PagedCache

        store = ExpertStore(path, page_cache=page_cache)
        try:
            cache = PagedCache(budget, policy, loader=store.load_key, sizer=store.size_of_key,
                               load_workers=load_workers, policy_params=policy_params)
        except BaseException:
            store.close()
            raise
        try:
            return cls(store, cache, n_ctx=n_ctx, on_layer=on_layer,
                       record_routing=record_routing, prefetch=prefetch, predictor=predictor,
                       owns=True)
        except BaseException:
            cache.close()
            store.close()
            raise

    def reset(self) -> None:
        self.n_past = 0

    def eval(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (n_vocab,) after appending ``tokens`` at positions n_past, n_past + 1, ..."""
        p = self.params
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("eval needs a non-empty sequence of token ids")
        if ids.min() < 0 or ids.max() >= p.n_vocab:
            raise ValueError(f"token ids must be in [0, {p.n_vocab}), got {ids.min()}.."
                             f"{ids.max()}")
        if self.n_past + ids.size > self.n_ctx:
            raise ValueError(f"context full: {self.n_past} + {ids.size} tokens > n_ctx "
                             f"{self.n_ctx}; reset() or make the model with a larger n_ctx")
        positions = np.arange(self.n_past, self.n_past + ids.size)
        x = self.dense.token_embd[ids]
        chosen = []
        if self.executor.prefetcher is not None:
            self.executor.prefetcher.reset_sequence()  # transitions are learned within a batch
        for layer in range(p.n_layer):
            block = self.dense.blocks[layer]
            x = x + self._attention(layer, rms_norm(x, block["attn_norm"], p.rms_eps),
                                    positions)
            x = x + self.executor.forward(layer, rms_norm(x, block["ffn_norm"], p.rms_eps),
                                          residual=x)
            chosen.append(self.executor.last_experts)
        self.n_past += ids.size
        if self._routing is not None:
            self._routing.append(np.stack(chosen, axis=1))  # (n_tokens, n_layer, k)
        last = rms_norm(x[-1], self.dense.output_norm, p.rms_eps)
        return self.dense.output @ last

    def _attention(self, layer: int, h: np.ndarray, positions: np.ndarray) -> np.ndarray:
        p, block = self.params, self.dense.blocks[layer]
        n = h.shape[0]
        q = rope((h @ block["attn_q"].T).reshape(n, p.n_head, p.head_dim), positions,
                 p.rope_base)
        k = rope((h @ block["attn_k"].T).reshape(n, p.n_head_kv, p.head_dim), positions,
                 p.rope_base)
        v = (h @ block["attn_v"].T).reshape(n, p.n_head_kv, p.head_dim)
        start, end = self.n_past, self.n_past + n
        self._k[layer, start:end] = k
        self._v[layer, start:end] = v
        keys, values = self._k[layer, :end], self._v[layer, :end]
        group = p.n_head // p.n_head_kv  # query heads per K/V head
        keys = np.repeat(keys, group, axis=1)  # (end, n_head, head_dim)
        values = np.repeat(values, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, keys) / np.float32(np.sqrt(p.head_dim))
        causal = positions[:, None] >= np.arange(end)[None, :]  # (n, end)
        scores = np.where(causal[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        mixed = np.einsum("hqk,khd->qhd", scores, values).reshape(n, p.n_head * p.head_dim)
        return (mixed @ block["attn_output"].T).astype(np.float32, copy=False)

    def generate(self, prompt: Sequence[int], max_tokens: int, *, temperature: float = 0.0,
                 seed: int = 0, stop: Callable[[int], bool] | None = None) -> list[int]:
        """Up to ``max_tokens`` new tokens after ``prompt`` (from a fresh KV cache): greedy at
        temperature 0, else sampled from softmax(logits / temperature) with a seeded RNG."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        rng = np.random.default_rng(seed)
        self.reset()
        logits = self.eval(prompt)
        out: list[int] = []
        for _ in range(max_tokens):
            token = _pick(logits, temperature, rng)
            if stop is not None and stop(token):
                break
            out.append(token)
            if len(out) == max_tokens or self.n_past >= self.n_ctx:
                break
            logits = self.eval([token])
        return out

    def routing(self) -> np.ndarray:
        """Every evaluated token's experts, (tokens, layers, top_k), in evaluation order."""
        if self._routing is None:
            raise ValueError("routing was not recorded: make the model with "
                             "record_routing=True")
        if not self._routing:
            return np.zeros((0, self.params.n_layer, self.store.n_expert_used), dtype=np.int64)
        return np.concatenate(self._routing).astype(np.int64)

    def counters(self) -> RunCounters:
        return self.executor.counters()

    def prefetch_counters(self) -> PrefetchCounters | None:
        """How the prefetcher did (None when prefetch is off)."""
        return self.executor.prefetch_counters()

    def close(self) -> None:
        if self._owns:
            self._owns = False
            self.cache.close()
            self.store.close()

    def __enter__(self) -> MoeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    probs = np.exp(z - z.max())
    return int(rng.choice(len(probs), p=probs / probs.sum()))
