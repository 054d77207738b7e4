"""Seeded routing problems with text prompts, real LoRA sizes and drifting popularity.

A second workload beside ``synthetic`` (GitHub issue 13). Requests are text from tenants that
write in distinct styles; the router sees only what its configured feature extractor makes of
the text, so it has to infer the tenant from the words.

Tenants and styles. ``n_tenants`` tenants (default ``max(4, N // 4)``). Each has a style: its
own vocabulary of ``STYLE_WORDS`` made-up, word-like tokens built from a handful of syllables
it favours (so its words also share character n-grams), disjoint from every other tenant's and
from ``SHARED_WORDS`` (common English words every tenant uses). A prompt has ``MIN_WORDS`` to
``MAX_WORDS`` words (uniform); each word is drawn uniformly from the tenant's vocabulary with
probability ``p_style``, else uniformly from the shared one. The first letter is capitalised
and the prompt ends with a full stop.

Utilities. Adapter ``a`` specialises in tenant ``a % n_tenants``. For a request of tenant t:

    u(t, a) = clip(b_a + AFFINITY * [a % n_tenants == t] + v_{t,a}, 0, 1)

with b_a ~ U(0.1, 0.4) per adapter, AFFINITY = 0.5 and v_{t,a} ~ U(0, 0.05) per (tenant,
adapter), so a specialist is worth 0.6-0.95 and any other adapter 0.1-0.45 (the clip never
acts). The utility depends on the request only through its tenant. When ``n_tenants >
n_arms`` the tenants ``n_arms..`` have no specialist.

Popularity. Tenants' request probabilities are Zipf(``zipf``) over a ranking of the tenants:
the tenant ranked r (from 1) has probability proportional to r^-zipf. The ranking is a seeded
random permutation, redrawn every ``drift_every`` requests (default ``horizon // 4``; 0 keeps
the first ranking for the whole horizon), so the popular tenants change.

Sizes. Each adapter's size is the exact tensor bytes of a PEFT LoRA on a real base model
(``LORA_BASES``), rank in ``LORA_RANKS`` and targets in ``LORA_TARGETS``, drawn uniformly among
the combinations whose size lies in [``min_bytes``, ``max_bytes``] (5-320 MiB by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.router.config import FeatureConfig
from edge.router.features import make_extractor
from edge.sim.synthetic import RoutingProblem

MiB = 2**20


@dataclass(frozen=True)
class LoraBase:
    """The shapes of a decoder-only base model that a LoRA's tensors depend on."""

    name: str
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_width(self) -> int:
        """The output width of the k and v projections (grouped-query attention)."""
        return self.n_kv_heads * self.head_dim


# hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size
# from each model's config.json on the Hugging Face Hub (head_dim = hidden / heads for all).
LORA_BASES: dict[str, LoraBase] = {b.name: b for b in (
    LoraBase("Qwen2.5-0.5B", 896, 24, 14, 2, 4864),
    LoraBase("Qwen2.5-1.5B", 1536, 28, 12, 2, 8960),
    LoraBase("Llama-3.2-1B", 2048, 16, 32, 8, 8192),
    LoraBase("Qwen2.5-3B", 2048, 36, 16, 2, 11008),
    LoraBase("Llama-3.2-3B", 3072, 28, 24, 8, 8192),
    LoraBase("Qwen2.5-7B", 3584, 28, 28, 4, 18944),
    LoraBase("Llama-3.1-8B", 4096, 32, 32, 8, 14336),
)}

LORA_RANKS = (8, 16, 32, 64)
# PEFT target_modules presets: the linear maps of every decoder layer that get an A and a B.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def _linear_shapes(base: LoraBase) -> dict[str, tuple[int, int]]:
    """(out, in) of each linear map of one decoder layer."""
    h, kv, inter = base.hidden, base.kv_width, base.intermediate
    q = base.n_heads * base.head_dim
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}


def lora_file_bytes(base: LoraBase, rank: int, targets: str, dtype_bytes: int = 2) -> int:
    """The bytes of a PEFT LoRA's tensors: for every layer and every targeted map W (out x in),
    A is (rank x in) and B is (out x rank), so rank * (in + out) parameters per map, each
    ``dtype_bytes`` wide (2: fp16 / bf16). The safetensors header (a few tens of KB of JSON) is
    ignored: it is well under 1% of any size here."""
    if rank < 1 or dtype_bytes < 1:
        raise ValueError(f"need rank >= 1 and dtype_bytes >= 1; got {rank}, {dtype_bytes}")
    try:
        maps = LORA_TARGETS[targets]
    except KeyError:
        raise ValueError(f"unknown targets {targets!r} (known: {', '.join(LORA_TARGETS)})") \
            from None
    shapes = _linear_shapes(base)
    per_layer = sum(rank * (shapes[m][0] + shapes[m][1]) for m in maps)
    return base.n_layers * per_layer * dtype_bytes


def lora_combos(min_bytes: int = 5 * MiB,
                max_bytes: int = 320 * MiB) -> list[tuple[str, int, str, int]]:
    """Every (base name, rank, targets, bytes) of ``LORA_BASES`` x ``LORA_RANKS`` x
    ``LORA_TARGETS`` whose size lies in [min_bytes, max_bytes], in table order."""
    return [(base.name, rank, targets, size)
            for base in LORA_BASES.values() for rank in LORA_RANKS for targets in LORA_TARGETS
            if min_bytes <= (size := lora_file_bytes(base, rank, targets)) <= max_bytes]


def draw_lora_sizes(n: int, rng: np.random.Generator, min_bytes: int = 5 * MiB,
                    max_bytes: int = 320 * MiB) -> np.ndarray:
    """(n,) int64: each the size of a LoRA on a combination drawn uniformly from
    ``lora_combos(min_bytes, max_bytes)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    combos = lora_combos(min_bytes, max_bytes)
    if not combos:
        raise ValueError(f"no LoRA combination has a size in [{min_bytes}, {max_bytes}] bytes")
    sizes = np.array([size for *_, size in combos], dtype=np.int64)
    return sizes[rng.integers(len(sizes), size=n)]


STYLE_WORDS = 40
MIN_WORDS, MAX_WORDS = 8, 30
# Common English function words, the same for every tenant: they carry no tenant signal.
SHARED_WORDS = (
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "with", "as", "was", "on",
    "be", "at", "by", "this", "have", "from", "or", "an", "they", "which", "you", "one", "are",
    "but", "not", "all", "we", "can", "there", "what", "when", "so", "if", "will", "about",
    "would", "how", "their", "more", "do", "some", "could", "them", "these", "other", "into",
    "then", "than", "its", "also", "only", "after", "should", "most", "our", "just",
)
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
           "z", "br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "th", "tr")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "oo", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l", "k", "m", "x")
# The syllables a tenant builds its words from: few enough that its words share n-grams.
_TENANT_SYLLABLES = 8

BASE_RANGE = (0.1, 0.4)
AFFINITY = 0.5
VARIATION = 0.05


@dataclass(frozen=True)
class TextRoutingProblem(RoutingProblem):
    """A ``RoutingProblem`` whose contexts are ``make_extractor(features).extract_batch(
    prompts)``; ``topics`` holds each request's tenant."""

    prompts: tuple[str, ...]
    features: FeatureConfig


def make_text_problem(n_arms: int, horizon: int, rng: np.random.Generator, *,
                      features: FeatureConfig | None = None, n_tenants: int | None = None,
                      zipf: float = 1.0, drift_every: int | None = None, p_style: float = 0.5,
                      min_bytes: int = 5 * MiB, max_bytes: int = 320 * MiB,
                      ) -> TextRoutingProblem:
    """The problem of the module docstring, drawn from ``rng``."""
    tenants = max(4, n_arms // 4) if n_tenants is None else n_tenants
    drift = horizon // 4 if drift_every is None else drift_every
    if n_arms < 1 or horizon < 1 or tenants < 1:
        raise ValueError(f"need n_arms >= 1, horizon >= 1, n_tenants >= 1; got {n_arms}, "
                         f"{horizon}, {tenants}")
    if not 0 < p_style <= 1:
        raise ValueError(f"p_style must be in (0, 1], got {p_style}")
    if not (np.isfinite(zipf) and zipf >= 0):
        raise ValueError(f"zipf must be a finite number >= 0, got {zipf}")
    if drift < 0:
        raise ValueError(f"drift_every must be >= 0 (0: no drift), got {drift}")
    if not 0 < min_bytes <= max_bytes:
        raise ValueError(f"need 0 < min_bytes <= max_bytes; got {min_bytes}, {max_bytes}")
    features = features or FeatureConfig()
    extractor = make_extractor(features)  # before the work: a bad config fails at once

    sizes = draw_lora_sizes(n_arms, rng, min_bytes, max_bytes)
    styles = _tenant_vocabularies(tenants, rng)
    base = rng.uniform(*BASE_RANGE, size=n_arms)
    variation = rng.uniform(0.0, VARIATION, size=(tenants, n_arms))
    specialist = (np.arange(n_arms)[None, :] % tenants) == np.arange(tenants)[:, None]
    table = np.clip(base[None, :] + AFFINITY * specialist + variation, 0.0, 1.0)
    topics = _drifting_tenants(tenants, horizon, zipf, drift, rng)
    prompts = _prompts(topics, styles, p_style, rng)
    contexts = extractor.extract_batch(prompts)
    return TextRoutingProblem(contexts, table[topics], sizes, topics, prompts, features)


def _tenant_vocabularies(n_tenants: int, rng: np.random.Generator) -> np.ndarray:
    """(n_tenants, STYLE_WORDS) str: distinct made-up words, none shared with another tenant
    or with ``SHARED_WORDS``."""
    taken = set(SHARED_WORDS)
    vocab = np.empty((n_tenants, STYLE_WORDS), dtype=object)
    for t in range(n_tenants):
        syllables = [_ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))]
                     + _CODAS[rng.integers(len(_CODAS))] for _ in range(_TENANT_SYLLABLES)]
        words: list[str] = []
        while len(words) < STYLE_WORDS:
            # 2-3 of the tenant's syllables: 8^2 + 8^3 = 576 words to pick 40 from, so the
            # loop ends even when other tenants took some.
            picks = rng.integers(_TENANT_SYLLABLES, size=rng.integers(2, 4))
            word = "".join(syllables[i] for i in picks)
            if word not in taken:
                taken.add(word)
                words.append(word)
        vocab[t] = words
    return vocab


def _drifting_tenants(n_tenants: int, horizon: int, zipf: float, drift_every: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(horizon,) int64: each request's tenant, Zipf over a ranking redrawn every
    ``drift_every`` requests (0: never)."""
    weights = 1.0 / np.arange(1, n_tenants + 1) ** zipf
    weights /= weights.sum()
    period = drift_every or horizon
    topics = np.empty(horizon, dtype=np.int64)
    for start in range(0, horizon, period):
        ranking = rng.permutation(n_tenants)  # ranking[r]: the tenant ranked r + 1
        p = np.empty(n_tenants)
        p[ranking] = weights
        stop = min(start + period, horizon)
        topics[start:stop] = rng.choice(n_tenants, size=stop - start, p=p)
    return topics


def _prompts(topics: np.ndarray, styles: np.ndarray, p_style: float,
             rng: np.random.Generator) -> tuple[str, ...]:
    # All words at once: one draw per word of every prompt, then one join per prompt.
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, size=len(topics))
    n_words = int(lengths.sum())
    tenant = np.repeat(topics, lengths)
    from_style = rng.random(n_words) < p_style
    style_pick = rng.integers(STYLE_WORDS, size=n_words)
    shared_pick = rng.integers(len(SHARED_WORDS), size=n_words)
    shared = np.array(SHARED_WORDS, dtype=object)
    words = np.where(from_style, styles[tenant, style_pick], shared[shared_pick]).tolist()
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    return tuple(" ".join(words[s:e]).capitalize() + "." for s, e in zip(starts, ends,
                                                                          strict=True))
