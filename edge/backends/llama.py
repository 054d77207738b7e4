"""The llama.cpp backend: one base model stays loaded; LoRA adapters come and go under the budget.

``Runtime`` drives it through the ``Backend`` protocol: the cache calls ``load`` on a miss (after
making room for the adapter's declared size) and ``unload`` when it evicts; ``serve`` attaches
the request's adapter set (``llama_set_adapters_lora``: several adapters with scales, or none)
and generates. Reloading the model with ``lora_path`` per switch costs a full model load; this
attaches a resident adapter in microseconds.

One context serves one request at a time (a lock), and the same lock covers adapter loads and
frees, so an adapter is never freed while a generation uses it, and never while it is attached:
``unload`` detaches it first. KV state is reused only between requests under the same adapter
set and scales, and only when the earlier tokens are a prefix of the new prompt; any other
change clears the context's memory, because KV computed under one adapter set is wrong under
another (llama-cpp-python keys its reuse by tokens alone: FIELD-NOTES).

    backend = LlamaBackend("models/base.gguf", n_ctx=2048)
    with Runtime.from_config("policies/polar.yaml", backend=backend) as runtime: ...
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edge.backends import llama_api
from edge.backends.llama_api import Adapter, LlamaModel
from edge.catalogue import Catalogue, CatalogueEntry
from edge.errors import ConfigError, RequestError

DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class Completion:
    """What ``serve`` returns: the generated text and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of generation) or "length" (max_tokens reached)
    reused_tokens: int  # prompt tokens whose KV was kept from the previous request
    # Mean log-probability of the generated tokens under the adapter set that generated them
    # (NaN without tokens); the "response-likelihood" reward source turns it into a reward.
    mean_logprob: float


class LlamaBackend:
    """A ``Backend`` over llama-cpp-python; see the module docstring."""

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 2048, seed: int = 0,
                 n_threads: Optional[int] = None, reuse_prefix: bool = True,
                 model: Optional[LlamaModel] = None) -> None:
        self.model = model if model is not None else llama_api.load_model(
            model_path, n_ctx=n_ctx, seed=seed, n_threads=n_threads)
        self.n_ctx = self.model.llama.n_ctx()
        self.reuse_prefix = reuse_prefix
        self.clock = time.monotonic
        self._lock = threading.Lock()
        # What the context's memory holds: the adapter set it was computed under, and tokens.
        self._kv_key: Optional[tuple] = None
        self._kv_tokens: list[int] = []
        self.loads = self.unloads = self.served = 0
        self.adapters = None  # the AdapterCatalog, once build_catalogue made one
        self._base_info = None  # the base's tensor names and shapes, to check other files
        self._checked: dict[str, tuple] = {}  # path -> the file's identity when it passed

    # ---- the catalogue -----------------------------------------------------------------------

    def build_catalogue(self, config: Any) -> Catalogue:
        """Every adapter in ``config.directory`` that passes validation against this base model
        (edge.backends.catalog: type, architecture, tensor names and shapes, bounds), sized by
        its tensors' bytes; a bad file is logged with its reason and skipped. Called again, it
        rescans (only changed files are read again)."""
        from edge.backends.catalog import AdapterCatalog

        if config.files:
            raise ConfigError("catalogue.files: the llama backend serves the adapters of one "
                              "directory (catalogue.directory), each validated against the base "
                              "model; put the files there")
        if config.directory is None:
            raise ConfigError("catalogue.directory: the llama backend needs the directory of "
                              "its LoRA adapters")
        if self.adapters is None or str(self.adapters.directory) != str(config.directory):
            self.adapters = AdapterCatalog(config.directory, self.model.path, config.pattern)
        self.adapters.scan()
        return self.adapters.catalogue

    # ---- paging (called by the cache) -----------------------------------------------------

    def load(self, entry: CatalogueEntry) -> tuple[Adapter, int]:
        # llama.cpp never sees a file that was not validated against this base model: one from
        # the adapter directory is opened only if it is still the file that was validated
        # (inside the directory, same inode, size and mtime); any other is validated now.
        if self.adapters is not None and entry.name in self.adapters:
            path = self.adapters.resolve(entry.name)
        else:
            path = self._validated(entry.location)
        with self._lock:
            adapter = llama_api.adapter_init(self.model, path)
            self.loads += 1
        # The declared size (from the adapter's GGUF header) is what the cache reserved; llama.cpp
        # allocates the same tensors, so report it back unchanged.
        return adapter, entry.size

    def _validated(self, location: str) -> str:
        """``location`` once it passed validation; a file already validated and unchanged since
        (same device, inode, size and mtime) is not parsed again on every page-in."""
        from edge.backends.catalog import BaseModelInfo, validate_adapter

        try:
            st = os.stat(location)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            identity = None  # validate_adapter names the problem
        if identity is not None and self._checked.get(location) == identity:
            return location
        if self._base_info is None:
            self._base_info = BaseModelInfo.from_gguf(self.model.path)
        validate_adapter(location, self._base_info)  # AdapterError naming the file and why
        if identity is not None:
            self._checked[location] = identity
        return location

    def unload(self, entry: CatalogueEntry, adapter: Adapter) -> None:
        with self._lock:
            if adapter in self.model.attached:
                llama_api.set_adapters(self.model, [])
                self._kv_key = None  # the next request's _attach resets the memory
            llama_api.adapter_free(adapter)
            self.unloads += 1

    # ---- serving -----------------------------------------------------------------------------

    def serve(self, request: Any, objects: Sequence[tuple[CatalogueEntry, Adapter]]
              ) -> Completion:
        stream = self.serve_stream(request, objects)
        while True:
            try:
                next(stream)
            except StopIteration as done:
                return done.value

    def serve_stream(self, request: Any, objects: Sequence[tuple[CatalogueEntry, Adapter]]
                     ) -> Iterator[str]:
        """Yield the completion's text as it is generated (whole UTF-8 characters); the
        generator's return value is the ``Completion``. The context is held until the generator
        finishes or is closed, so a consumer must close one it abandons (``Runtime.stream``
        does)."""
        prompt = request.prompt
        if not isinstance(prompt, str):
            raise RequestError(f"the llama.cpp backend needs a text prompt, got "
                               f"{type(prompt).__name__}")
        params = dict(request.params or {})
        max_tokens = _positive_int(params.pop("max_tokens", DEFAULT_MAX_TOKENS), "max_tokens")
        temperature = _finite(params.pop("temperature", 0.0), "temperature")
        seed = params.pop("seed", None)
        scales = params.pop("scales", {}) or {}
        if params:
            raise RequestError(f"unknown generation parameter(s) {sorted(params)} (known: "
                               "max_tokens, temperature, seed, scales)")
        adapters = [(adapter, _finite(scales.get(entry.name, entry.metadata.get("scale", 1.0)),
                                      f"scale of {entry.name}"))
                    for entry, adapter in objects]
        return self._stream(prompt, adapters, max_tokens, temperature, seed)

    def _stream(self, prompt: str, adapters: list[tuple[Adapter, float]], max_tokens: int,
                temperature: float, seed: Optional[int]) -> Generator[str, None, Completion]:
        with self._lock:
            tokens = self.model.tokenize(prompt)
            if len(tokens) + max_tokens > self.n_ctx:
                raise RequestError(f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} "
                                   f"exceeds the context of {self.n_ctx} tokens")
            self._attach(adapters)
            reused = self._prefill(tokens)
            out, finish, logprob = yield from self._generate(max_tokens, temperature, seed)
            self.served += 1
        text = self.model.detokenize(out).decode("utf-8", errors="replace")
        mean = logprob / len(out) if out else float("nan")
        return Completion(text, len(tokens), len(out), finish, reused, mean)

    def _generate(self, max_tokens: int, temperature: float, seed: Optional[int]
                  ) -> Generator[str, None, tuple[list[int], str, float]]:
        """Yield the text of each token as it is sampled (whole UTF-8 characters); return the
        tokens, why generation stopped, and the sum of their log-probabilities."""
        rng = np.random.default_rng(seed)
        out: list[int] = []
        logprob = 0.0
        finish = "length"
        pending = b""  # bytes of a character split across tokens
        logits = llama_api.last_logits(self.model)
        for _ in range(max_tokens):
            token = _sample(logits, temperature, rng)
            if llama_api.is_end_of_generation(self.model, token):
                finish = "stop"
                break
            out.append(token)
            logprob += _log_softmax_at(logits, token)
            pending += self.model.detokenize([token])
            text, pending = _whole_characters(pending)
            llama_api.decode(self.model, [token])
            self._kv_tokens.append(token)
            if text:
                yield text
            logits = llama_api.last_logits(self.model)
        if pending:
            yield pending.decode("utf-8", errors="replace")
        return out, finish, logprob

    def _attach(self, adapters: list[tuple[Adapter, float]]) -> None:
        key = tuple((id(a), s) for a, s in adapters)
        if key != self._kv_key:
            llama_api.set_adapters(self.model, adapters)
            self._forget_kv()
            self._kv_key = key

    def _forget_kv(self) -> None:
        llama_api.clear_memory(self.model)
        self._kv_tokens = []
        self._kv_key = None

    def _prefill(self, tokens: list[int]) -> int:
        """Decode the prompt, keeping the longest prefix of it the memory already holds (under
        this adapter set: ``_attach`` cleared it otherwise), at least the last token decoded
        anew so its logits exist. Returns how many tokens were reused."""
        held = self._kv_tokens
        keep = 0
        if self.reuse_prefix:
            limit = min(len(held), len(tokens) - 1)
            while keep < limit and held[keep] == tokens[keep]:
                keep += 1
        if keep < len(held):
            if keep == 0 or not llama_api.truncate_memory(self.model, keep):
                llama_api.clear_memory(self.model)
                keep = 0
        self._kv_tokens = list(tokens)
        llama_api.decode(self.model, tokens[keep:])
        return keep

    # ---- router hooks ------------------------------------------------------------------------

    def feature_extractor(self, config: Any) -> Any:
        """The router's features from this model's own embedding when the policy file asks for
        them (``features.extractor: llama-embedding``); None leaves the router's own."""
        from edge.backends.llama_features import EXTRACTOR_NAME, embedding_extractor_for

        if config.extractor != EXTRACTOR_NAME:
            return None
        return embedding_extractor_for(self, config)

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the model (and any adapter still loaded: the cache unloads its own first)."""
        with self._lock:
            self.model.close()


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = (logits - logits.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def _whole_characters(data: bytes) -> tuple[str, bytes]:
    """The text of ``data`` up to its last complete UTF-8 character, and the rest."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), b""


def _log_softmax_at(logits: np.ndarray, token: int) -> float:
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top, dtype=np.float64).sum()))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{name} must be a positive integer, got {value!r}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)
