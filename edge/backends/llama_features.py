"""Router features from the base model's own embedding (``features.extractor: llama-embedding``).

    extractor = embedding_extractor_for(backend, config.router.features)   # a LlamaBackend
    router = Router(config.router, sizes, extractor=extractor)
    ...
    router.close(); extractor.close(); backend.close()                     # in this order

A prompt is cut at ``max_chars`` characters, tokenized by the base model, cut again at the
embedding context's size, and run through the base model in a context of its own: created on the
same ``llama_model`` with embeddings on and mean pooling, and never given a LoRA adapter. The
serving context attaches whatever adapters each request wants; the router must see the same
features whichever they are, or what it learned for one adapter set would not apply under
another. The mean-pooled ``n_embd`` vector (after the model's final norm) is then mapped to
``dim`` numbers:

* coordinate 0 is a constant ``BIAS`` (0.5): LinUCB's linear models get an intercept, so an
  arm's mean reward need not be explained by the direction of the prompt;
* coordinates 1..dim-1 are a fixed Gaussian random projection of the pooled vector
  (``numpy.random.default_rng(hash_seed)``, drawn once), scaled to norm ``sqrt(1 - BIAS**2)``.

So every vector has unit L2 norm and the same intercept. A prompt that tokenizes to nothing
(possible only with a model that adds no BOS token) has no embedding and maps to ``e_0``.

The fingerprint (saved with the router's state, which is refused under another one) hashes the
``FeatureConfig``, the embedding context's token limit, this module's recipe version and the
base model's identity (``model_identity``): a state learned on one model is refused on another.

Ownership, the rules of ``llama.h``: the extractor's context is valid only while the model lives.
Free it (``close``) before the model: after the router, before ``LlamaBackend.close``. ``close``
waits for an extraction in flight. If the model was closed first anyway, the context is leaked,
not freed (freeing a context whose model is gone is a use after free), and a warning is logged.

One lock per extractor: extractions run one at a time, and in parallel with the serving context
(llama.cpp allows several contexts on one model; the model's weights are read-only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edge.backends.llama_api import LlamaApiError, LlamaModel, llama_cpp
from edge.errors import ConfigError
from edge.router.config import FeatureConfig
from edge.router.features import register_extractor

if TYPE_CHECKING:
    from edge.backends.llama import LlamaBackend

EXTRACTOR_NAME = "llama-embedding"
# Bumped whenever the recipe (pooling, projection, bias, normalisation) changes: a different
# recipe is a different feature space, and a saved router state must be refused.
RECIPE_VERSION = 1
BIAS = 0.5
DEFAULT_N_CTX = 512

# model_identity reads at most IDENTITY_HEAD + IDENTITY_SAMPLES * IDENTITY_SAMPLE bytes + the
# tail, whatever the model's size; smaller files are hashed whole.
IDENTITY_HEAD = 8 << 20
IDENTITY_SAMPLES = 16
IDENTITY_SAMPLE = 1 << 20

log = logging.getLogger(__name__)


def model_identity(path: str | os.PathLike[str]) -> str:
    """A sha256 of a GGUF file that is cheap for a multi-GB model and the same for every copy.

    Hashed: the file size, the first 8 MiB (the GGUF header, i.e. the metadata, vocabulary and
    every tensor's name, shape, type and offset, then the first tensors' data), 16 samples of
    1 MiB at evenly spaced offsets and the last 1 MiB: about 25 MiB read however large the model
    is. Size and mtime alone would differ between two copies of one file (and agree between two
    files of the same shape); a whole-file hash costs seconds per GB. A re-quantised or merged
    fine-tune changes bytes all over the weights, which the samples see; an edit confined to
    bytes between samples would go unnoticed (say so in a fingerprint you rely on).
    A file no larger than what would be read is hashed whole.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    digest = hashlib.sha256(f"gguf-identity/v1 size={size}\n".encode())
    with open(path, "rb") as f:
        if size <= IDENTITY_HEAD + (IDENTITY_SAMPLES + 1) * IDENTITY_SAMPLE:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f.read(IDENTITY_HEAD))
            span = size - IDENTITY_HEAD - IDENTITY_SAMPLE
            step = span // IDENTITY_SAMPLES
            for i in range(IDENTITY_SAMPLES):
                f.seek(IDENTITY_HEAD + i * step)
                digest.update(f.read(IDENTITY_SAMPLE))
            f.seek(size - IDENTITY_SAMPLE)
            digest.update(f.read(IDENTITY_SAMPLE))
    return digest.hexdigest()


class LlamaEmbeddingExtractor:
    """A ``FeatureExtractor`` over the base model's mean-pooled embedding; see the module
    docstring. ``n_ctx`` bounds the tokens embedded per prompt (and the context's memory);
    it is capped at the model's training context."""

    def __init__(self, model: LlamaModel, config: FeatureConfig, *,
                 n_ctx: int = DEFAULT_N_CTX, n_threads: Optional[int] = None) -> None:
        if config.dim < 2:
            raise ConfigError(f"features.dim: the {EXTRACTOR_NAME} extractor needs at least 2 "
                              f"dimensions (a bias and a projection), got {config.dim}")
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}")
        model._open()
        self.model = model
        self.config = config
        self.dim = config.dim
        self.n_embd = int(llama_cpp.llama_model_n_embd(model.model))
        n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model.model))
        if n_ctx_train > 0:
            n_ctx = min(n_ctx, n_ctx_train)
        rng = np.random.default_rng(config.hash_seed)
        self._projection = rng.standard_normal((self.dim - 1, self.n_embd))
        self.model_identity = model_identity(model.path)
        self._lock = threading.Lock()
        self._batch: Any = None
        self._ctx: Any = _embedding_context(model, n_ctx, n_threads)
        try:
            # llama.cpp may round n_ctx up (128 -> 256); a mean-pooled sequence must fit one
            # micro-batch: split across several, decode succeeds but the pooled vector is wrong
            # (checked with llama-cpp-python 0.3.36: 100 tokens, n_ubatch 32 vs 256).
            self.max_tokens = min(int(llama_cpp.llama_n_ctx(self._ctx)),
                                  int(llama_cpp.llama_n_ubatch(self._ctx)), n_ctx)
            self._batch = llama_cpp.llama_batch_init(self.max_tokens, 0, 1)
        except BaseException:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
            raise
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        canonical = json.dumps({
            "extractor": EXTRACTOR_NAME, "recipe": RECIPE_VERSION, "pooling": "mean",
            "features": self.config.fingerprint(), "max_tokens": self.max_tokens,
            "model": self.model_identity,
        }, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def extract(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
        with self._lock:
            return self._features(self._pooled(text))

    def extract_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One prompt per row; each is decoded on its own (one sequence per decode), under one
        hold of the lock."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
        out = np.empty((len(texts), self.dim), dtype=np.float64)
        with self._lock:
            for i, text in enumerate(texts):
                out[i] = self._features(self._pooled(text))
        return out

    def _pooled(self, text: str) -> Optional[np.ndarray]:
        """The mean-pooled embedding of ``text`` (None if it has no tokens); lock held."""
        if self._ctx is None:
            raise LlamaApiError(f"the {EXTRACTOR_NAME} feature extractor is closed")
        if self.model.closed:
            raise LlamaApiError(f"the base model {self.model.path} was closed under the "
                                f"{EXTRACTOR_NAME} feature extractor; close the extractor first")
        tokens = self.model.tokenize(text[: self.config.max_chars])[: self.max_tokens]
        if not tokens:
            return None
        memory = llama_cpp.llama_get_memory(self._ctx)
        if memory:  # a causal model keeps a KV cache; the previous prompt must not leak in
            llama_cpp.llama_memory_clear(memory, True)
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True  # pooling reads every token's output
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise LlamaApiError(f"llama_decode returned {status} on {len(tokens)} tokens in the "
                                f"embedding context of {self.model.path}")
        pointer = llama_cpp.llama_get_embeddings_seq(self._ctx, 0)
        if not pointer:
            raise LlamaApiError(f"llama_get_embeddings_seq gave no pooled embedding "
                                f"({self.model.path})")
        pooled = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).astype(np.float64)
        if not np.all(np.isfinite(pooled)):
            raise LlamaApiError(f"the pooled embedding of {self.model.path} is not finite")
        return pooled

    def _features(self, pooled: Optional[np.ndarray]) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float64)
        projected = self._projection @ pooled if pooled is not None else None
        norm = math.sqrt(float(projected @ projected)) if projected is not None else 0.0
        if norm == 0.0:
            out[0] = 1.0
            return out
        out[0] = BIAS
        out[1:] = projected * (math.sqrt(1.0 - BIAS * BIAS) / norm)
        return out

    def close(self) -> None:
        """Free the embedding context (before the model: see the module docstring). Waits for an
        extraction in flight; closing twice is a no-op; a later ``extract`` raises."""
        with self._lock:
            if self._ctx is None:
                return
            ctx, batch = self._ctx, self._batch
            self._ctx = self._batch = None
            if batch is not None:
                llama_cpp.llama_batch_free(batch)
            if self.model.closed:
                log.warning("the base model %s was closed before its %s feature extractor; its "
                            "embedding context is leaked, not freed", self.model.path,
                            EXTRACTOR_NAME)
                return
            llama_cpp.llama_free(ctx)

    def __enter__(self) -> LlamaEmbeddingExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _embedding_context(model: LlamaModel, n_ctx: int, n_threads: Optional[int]) -> Any:
    """A new context on ``model.model`` for mean-pooled embeddings, with no adapters."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
    params.n_seq_max = 1
    params.embeddings = True
    params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
    threads = n_threads or getattr(model.llama, "n_threads", None)
    if threads:
        params.n_threads = params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise LlamaApiError(f"llama_init_from_model failed for an embedding context of {n_ctx} "
                            f"tokens on {model.path}")
    pooling = llama_cpp.llama_pooling_type(ctx)
    if pooling != llama_cpp.LLAMA_POOLING_TYPE_MEAN:
        llama_cpp.llama_free(ctx)
        raise LlamaApiError(f"{model.path}: the embedding context pools with type {pooling}, "
                            f"not mean ({llama_cpp.LLAMA_POOLING_TYPE_MEAN})")
    return ctx


def embedding_extractor_for(backend: LlamaBackend, config: FeatureConfig, *,
                            n_ctx: int = DEFAULT_N_CTX) -> LlamaEmbeddingExtractor:
    """The extractor the Runtime builds when ``features.extractor`` is ``llama-embedding``: on
    the backend's base model, in a context of its own. Close it before the backend."""
    if config.extractor != EXTRACTOR_NAME:
        raise ConfigError(f"features.extractor is {config.extractor!r}, not {EXTRACTOR_NAME!r}")
    return LlamaEmbeddingExtractor(backend.model, config, n_ctx=n_ctx)


@register_extractor(EXTRACTOR_NAME)
def _needs_a_model(config: FeatureConfig) -> LlamaEmbeddingExtractor:
    # The registry's factories take settings alone; this extractor also needs the loaded model.
    raise ConfigError(f"features.extractor: {EXTRACTOR_NAME!r} is built on the loaded base "
                      "model: use edge.backends.llama_features.embedding_extractor_for(backend, "
                      "features) and pass it to Router(..., extractor=...)")
