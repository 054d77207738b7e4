"""The llama.cpp backend: one base model stays loaded; LoRA adapters come and go under the budget.

``Runtime`` drives it through the ``Backend`` protocol: the cache calls ``load`` on a miss (after
making room for the adapter's declared size) and ``unload`` when it evicts; ``serve`` attaches
the request's adapter set (``llama_set_adapters_lora``: several adapters with scales, or none)
and generates. Reloading the model with ``lora_path`` per switch costs a full model load; this
attaches a resident adapter in microseconds.

A pool of ``n_contexts`` llama contexts (default 1) shares the one copy of the weights; each
context has its own KV memory and its own adapter set, so that many requests generate at once
(``slots``; the runtime's scheduler admits that many, and a surplus caller waits for a free
context). ``serve`` takes the idle context whose memory was computed under the request's adapter
set and shares the longest token prefix with its prompt, else the least recently used idle one.
``n_threads`` is the backend's total: with n contexts each gets ``n_threads // n`` (at least 1)
for generation and likewise of ``n_threads_batch`` for prompts, so a full pool does not
oversubscribe the cores; a lone request then uses its share only.

Locks: a context is leased to one generation at a time (its lock). Loading or freeing an adapter
(and closing) takes the model exclusively, between decode steps: each decode step holds the model
shared, so contexts decode in parallel, and a waiting load holds back new steps, so it waits for
the steps in flight (milliseconds), never for whole generations. ``unload`` detaches the adapter
from every idle context that has it attached; a context still generating with it would be a
cache bug (the cache never evicts a pinned adapter), so ``unload`` refuses that with
``LlamaApiError`` rather than free memory in use. KV state is reused only under the same adapter
set and scales, and only when the earlier tokens are a prefix of the new prompt; any other change
clears that context's memory, because KV computed under one adapter set is wrong under another
(llama-cpp-python keys its reuse by tokens alone: FIELD-NOTES).

Per request, what the backend adds to llama.cpp's evaluation is kept small: a repeated prompt's
tokens come from ``LlamaModel.tokenize``'s cache; a prompt the context's memory holds exactly
(after a one-token completion of it) is not decoded at all, its logits are still there; logits
are read in place; log-probabilities (a pass over the whole vocabulary per token: 262k entries
on Gemma 3) are computed only with ``track_logprobs`` (set by ``Runtime`` when its
reward source is "response-likelihood"), each when the next decode would overwrite its logits,
and for the last token only when ``mean_logprob`` is read or when the context decodes again,
whichever comes first; a ``Completion`` no longer referenced by then costs nothing.

``format_chat`` renders a conversation with the model's own chat template (the GGUF's
``tokenizer.chat_template``, through llama-cpp-python's ``Jinja2ChatFormatter``), or as
``role: content`` lines when the model has none. Prompts are tokenized with control-token text
read as control tokens (as llama-cpp-python's completions and llama-server do), which a
template's markers such as ``<|im_start|>`` need; a rendering's leading BOS text is dropped
because the tokenizer adds BOS itself.

    backend = LlamaBackend("models/base.gguf", n_ctx=2048, n_contexts=2)
    with Runtime.from_config("policies/polar.yaml", backend=backend) as runtime: ...
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edge.backends import llama_api
from edge.backends.llama_api import Adapter, LlamaApiError, LlamaContext, LlamaModel
from edge.catalogue import Catalogue, CatalogueEntry
from edge.errors import ConfigError, RequestError
from edge.stops import StopScanner

DEFAULT_MAX_TOKENS = 16


class _LogprobSum:
    """The log-probabilities of a completion's tokens, summed; the last one may still be in its
    context's logits (``defer``), read when ``mean`` is asked for or just before the context's
    logits change (``LlamaContext.before_logits_change``), whichever comes first. Thread-safe:
    a reader in another thread holds back the context's next decode until it has read them."""

    def __init__(self, total: float, count: int) -> None:
        self._total = total
        self._count = count
        self._pending: Optional[tuple[np.ndarray, int, np.floating]] = None
        self._lock = threading.Lock()

    def defer(self, context: LlamaContext, logits: np.ndarray, token: int,
              top: np.floating) -> None:
        """Add ``token``'s log-probability under ``logits`` (a view of ``context``'s, whose
        maximum is ``top``) later. Called by the context's only user, before it is released."""
        earlier = context.before_logits_change
        if earlier is not None:
            earlier()  # another reader of the same logits: let it read them now
        self._pending = (logits, token, top)
        owner = weakref.ref(self)  # a completion no one holds any more needs nothing read

        def read_before_change() -> None:
            alive = owner()
            if alive is not None:
                alive._settle()

        context.before_logits_change = read_before_change

    def _settle(self) -> None:
        with self._lock:
            if self._pending is not None:
                logits, token, top = self._pending
                self._total += _log_softmax_at(logits, token, top)
                self._pending = None

    def mean(self) -> float:
        self._settle()
        return self._total / self._count if self._count else math.nan


@dataclass(frozen=True)
class Completion:
    """What ``serve`` returns: the generated text and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of generation) or "length" (max_tokens reached)
    reused_tokens: int  # prompt tokens whose KV was kept from an earlier request
    _logprobs: Optional[_LogprobSum] = field(repr=False, compare=False)

    @property
    def mean_logprob(self) -> Optional[float]:
        """Mean log-probability of the generated tokens under the adapter set that generated
        them (NaN without tokens; None unless the backend had ``track_logprobs`` on); the
        "response-likelihood" reward source turns it into a reward. Its last term is computed on
        first read (see the module docstring)."""
        return None if self._logprobs is None else self._logprobs.mean()


AdapterSet = tuple  # ((Adapter, scale), ...): compared by adapter identity and scale


@dataclass(eq=False)
class _Slot:
    """One context of the pool, what its KV memory holds, and who is using it."""

    index: int
    context: LlamaContext
    kv_key: Optional[AdapterSet] = None  # the adapter set its memory was computed under
    kv_tokens: list[int] = field(default_factory=list)
    serving: Optional[AdapterSet] = None  # the set of the request it is leased to; None: idle
    last_used: int = 0
    # n_vocab floats for the log-softmax of a token, made once: a fresh one per token would be
    # allocated and page-faulted anew (1 MB on Gemma 3).
    scratch: Optional[np.ndarray] = None


class _ModelGate:
    """Shared for a decode step on any context; exclusive for adapter loads and frees. A waiting
    exclusive caller holds back new shared entries, so it waits for the steps in flight only."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class LlamaBackend:
    """A ``Backend`` over llama-cpp-python; see the module docstring."""

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 2048, seed: int = 0,
                 n_threads: Optional[int] = None, reuse_prefix: bool = True,
                 model: Optional[LlamaModel] = None, n_contexts: int = 1,
                 n_threads_batch: Optional[int] = None, track_logprobs: bool = False) -> None:
        if isinstance(n_contexts, bool) or not isinstance(n_contexts, int) or n_contexts < 1:
            raise ConfigError(f"n_contexts must be a positive integer (the llama contexts "
                              f"served at once), got {n_contexts!r}")
        self.model = model if model is not None else llama_api.load_model(
            model_path, n_ctx=n_ctx, seed=seed, n_threads=n_threads,
            n_threads_batch=n_threads_batch)
        self.n_ctx = self.model.llama.n_ctx()
        self.reuse_prefix = reuse_prefix
        # Completion.mean_logprob is None without it (read per request, at its start).
        self.track_logprobs = track_logprobs
        self.clock = time.monotonic
        self.slots = n_contexts  # requests served at once (the runtime's scheduler reads it)
        self._gate = _ModelGate()
        self._pool = threading.Condition()  # guards the slots' leases and the counters
        self._uses = 0
        self._closed = False
        try:
            self._slots = [_Slot(i, c) for i, c in enumerate(self._make_contexts(n_contexts))]
        except BaseException:
            if model is None:
                self.model.close()
            raise
        self._bos_text = ""  # the BOS token's text when the tokenizer adds BOS itself
        self._chat = self._chat_formatter()
        self.loads = self.unloads = self.served = 0
        self.adapters = None  # the AdapterCatalog, once build_catalogue made one
        self._base_info = None  # the base's tensor names and shapes, to check other files
        self._checked: dict[str, tuple] = {}  # path -> the file's identity when it passed

    def _make_contexts(self, n: int) -> list[LlamaContext]:
        """The model's first context, and n - 1 more on the same weights, each with its share
        of the threads (one context keeps the threads it was built with)."""
        if n == 1:
            return [self.model.context]
        llama = self.model.llama
        threads = max(1, llama.n_threads // n)
        batch_threads = max(1, llama.n_threads_batch // n)
        llama_api.set_threads(self.model.context, threads, batch_threads)
        contexts = [self.model.context]
        try:
            for _ in range(n - 1):
                contexts.append(llama_api.context_init(self.model, n_threads=threads,
                                                       n_threads_batch=batch_threads))
        except BaseException:
            for context in contexts[1:]:
                llama_api.context_free(context)
            raise
        return contexts

    @property
    def contexts(self) -> tuple[LlamaContext, ...]:
        """The pool's contexts, the model's first context first."""
        return tuple(slot.context for slot in self._slots)

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
        with self._gate.exclusive():  # never during a decode step on any context
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
        """Detach ``adapter`` from every context that has it, then free it. The cache never
        unloads an adapter a request has pinned, so no context can be generating with it; if one
        is (a bug elsewhere), this refuses rather than free memory a decode is reading."""
        with self._gate.exclusive(), self._pool:
            for slot in self._slots:
                if slot.serving is not None and any(a is adapter for a, _ in slot.serving):
                    raise LlamaApiError(
                        f"cannot unload {entry.name} ({adapter.path}): context {slot.index} is "
                        f"serving a request with it (the cache must not evict a pinned adapter)")
            for slot in self._slots:
                if adapter in slot.context.attached:
                    # Idle, or leased to a request that has not attached its own set yet: its
                    # _attach sees the reset key and attaches and clears afresh.
                    llama_api.set_adapters(slot.context, [])
                    self._forget_kv(slot, clear=False)
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
        stop = params.pop("stop", ()) or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise RequestError(f"stop must be a non-empty string or a list of them, got "
                               f"{list(stop)!r}")
        if params:
            raise RequestError(f"unknown generation parameter(s) {sorted(params)} (known: "
                               "max_tokens, temperature, seed, scales, stop)")
        adapters = [(adapter, _finite(scales.get(entry.name, entry.metadata.get("scale", 1.0)),
                                      f"scale of {entry.name}"))
                    for entry, adapter in objects]
        return self._stream(prompt, adapters, max_tokens, temperature, seed, stop)

    def _stream(self, prompt: str, adapters: list[tuple[Adapter, float]], max_tokens: int,
                temperature: float, seed: Optional[int], stop: tuple[str, ...] = ()
                ) -> Generator[str, None, Completion]:
        try:
            tokens = self.model.tokenize(prompt, special=True)
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\ud800"
            raise RequestError(f"the prompt is not valid Unicode: {exc.reason} "
                               f"({exc.object[exc.start:exc.end]!r} at character {exc.start})"
                               ) from None
        if len(tokens) + max_tokens > self.n_ctx:
            raise RequestError(f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} "
                               f"exceeds the context of {self.n_ctx} tokens")
        key: AdapterSet = tuple(adapters)
        slot = self._lease(key, tokens)
        try:
            with self._gate.shared():
                self._attach(slot, adapters, key)
                reused = self._prefill(slot, tokens)
            out, finish, logprobs, text = yield from self._generate(
                slot, max_tokens, temperature, seed, stop, self.track_logprobs)
            with self._pool:
                self.served += 1
        except GeneratorExit:
            raise  # abandoned between tokens: the memory still matches kv_tokens
        except BaseException:
            # A failed decode leaves the memory unknown; the next request on it starts afresh.
            self._forget_kv(slot, clear=False)
            raise
        finally:
            self._release(slot)
        return Completion(text, len(tokens), len(out), finish, reused, logprobs)

    def _lease(self, key: AdapterSet, tokens: list[int]) -> _Slot:
        """Wait for an idle context and take the best one for this request: its memory computed
        under ``key`` with the longest shared prefix, else one with empty memory, else the least
        recently used (whose KV is the least likely to be wanted again)."""
        def preference(slot: _Slot) -> tuple:
            same_set = slot.kv_key == key
            shared = _common_prefix(slot.kv_tokens, tokens) if same_set else 0
            return same_set, shared, slot.kv_key is None, -slot.last_used

        with self._pool:
            while True:
                if self._closed:
                    raise LlamaApiError(f"the backend of {self.model.path} is closed")
                idle = [slot for slot in self._slots if slot.serving is None]
                if idle:
                    break
                self._pool.wait()
            slot = max(idle, key=preference)
            slot.serving = key
            self._uses += 1
            slot.last_used = self._uses
            return slot

    def _release(self, slot: _Slot) -> None:
        with self._pool:
            slot.serving = None
            self._pool.notify_all()

    def _generate(self, slot: _Slot, max_tokens: int, temperature: float, seed: Optional[int],
                  stop: tuple[str, ...] = (), track_logprobs: bool = True
                  ) -> Generator[str, None, tuple[list[int], str, Optional[_LogprobSum], str]]:
        """Yield the text of each token as it is sampled (whole UTF-8 characters); return the
        tokens, why generation stopped, their log-probabilities (the last one deferred when no
        decode follows it; None without ``track_logprobs``), and the text (with ``stop``
        sequences, up to the first one).

        A stop sequence ends generation as soon as it is complete (finish "stop"); until then a
        piece that could still begin one is held back. Its tokens were generated, so they count
        in the tokens returned."""
        scanner = StopScanner(stop) if stop else None
        sent: list[str] = []
        # Greedy decoding draws nothing: no generator to seed (tens of microseconds).
        rng = np.random.default_rng(seed) if temperature > 0 else None
        out: list[int] = []
        pieces: list[bytes] = []
        logprob = 0.0
        finish = "length"
        pending = b""  # bytes of a character split across tokens
        context = slot.context
        if slot.scratch is None:
            slot.scratch = np.empty(self.model.n_vocab, dtype=np.float32)
        # Views of the context's logits, read before the next decode overwrites them.
        with self._gate.shared():
            logits = llama_api.last_logits(context, copy=False)
        for step in range(max_tokens):
            token, top = _sample(logits, temperature, rng)
            if llama_api.is_end_of_generation(self.model, token):
                finish = "stop"
                break
            out.append(token)
            piece = self.model.piece(token)
            pieces.append(piece)
            text, pending = _whole_characters(pending + piece)
            if scanner is not None:
                text = scanner.feed(text)
                sent.append(text)
                if scanner.stopped:
                    finish = "stop"  # the token is not decoded: nothing will follow it
                    if text:
                        yield text
                    return out, finish, self._logprobs(context, logits, token, top, logprob,
                                                       len(out), track_logprobs), "".join(sent)
            if text:
                yield text  # before the decode: a stream's reader gets it a step sooner
            if step + 1 == max_tokens:
                # The last token's logits would never be read: no decode for them; its
                # log-probability is read from them if asked for.
                rest = self._rest(pending, scanner, sent)
                if rest:
                    yield rest
                return out, finish, self._logprobs(context, logits, token, top, logprob,
                                                   len(out), track_logprobs), \
                    self._text(pieces, scanner, sent)
            if track_logprobs:
                logprob += _log_softmax_at(logits, token, top, slot.scratch)
            with self._gate.shared():  # one step at a time, so a load waits for one step only
                llama_api.decode(context, [token])
                slot.kv_tokens.append(token)
                logits = llama_api.last_logits(context, copy=False)
        rest = self._rest(pending, scanner, sent)
        if rest:
            yield rest
        return out, finish, _LogprobSum(logprob, len(out)) if track_logprobs else None, \
            self._text(pieces, scanner, sent)

    @staticmethod
    def _rest(pending: bytes, scanner: Optional[StopScanner], sent: list[str]) -> str:
        """The text still held back once generation ends."""
        rest = pending.decode("utf-8", errors="replace") if pending else ""
        if scanner is not None:
            rest = scanner.feed(rest) + scanner.flush()
            sent.append(rest)
        return rest

    @staticmethod
    def _text(pieces: list[bytes], scanner: Optional[StopScanner], sent: list[str]) -> str:
        # The tokens' bytes decoded at once, as detokenizing them together gives them (a
        # character split across tokens is whole here).
        if scanner is not None:
            return "".join(sent)
        return b"".join(pieces).decode("utf-8", errors="replace")

    @staticmethod
    def _logprobs(context: LlamaContext, logits: np.ndarray, token: int, top: np.floating,
                  total: float, count: int, track: bool) -> Optional[_LogprobSum]:
        """The sum so far and, deferred, ``token``'s under the logits no decode has replaced
        (None when not tracked)."""
        if not track:
            return None
        logprobs = _LogprobSum(total, count)
        logprobs.defer(context, logits, token, top)
        return logprobs

    def _attach(self, slot: _Slot, adapters: list[tuple[Adapter, float]],
                key: AdapterSet) -> None:
        if key != slot.kv_key:
            self._forget_kv(slot)  # before set_adapters, which may fail half-way
            llama_api.set_adapters(slot.context, adapters)
            slot.kv_key = key

    def _forget_kv(self, slot: _Slot, clear: bool = True) -> None:
        """Forget what the context's memory holds; ``clear=False`` only marks it unknown (the
        next ``_attach`` clears it)."""
        if clear:
            llama_api.clear_memory(slot.context)
        slot.kv_tokens = []
        slot.kv_key = None

    def _prefill(self, slot: _Slot, tokens: list[int]) -> int:
        """Decode the prompt, keeping the longest prefix of it the memory already holds (under
        this adapter set: ``_attach`` cleared it otherwise), at least the last token decoded
        anew so its logits exist, unless the memory holds exactly the prompt: then nothing is
        decoded. Returns how many tokens were reused."""
        held = slot.kv_tokens
        if self.reuse_prefix and held == tokens:
            # The context's logits are those after held[-1]: only a request's own decodes touch
            # a context, each appends its tokens to kv_tokens, and a failed one empties it. So
            # the prompt's logits are still there (a one-token completion, or one that ended on
            # its first token, never decodes the token it sampled): sample from them, as
            # llama-cpp-python does on an exact repeat.
            return len(tokens)
        keep = 0
        if self.reuse_prefix:
            keep = _common_prefix(held, tokens[:-1])
        if keep < len(held):
            if keep == 0 or not llama_api.truncate_memory(slot.context, keep):
                llama_api.clear_memory(slot.context)
                keep = 0
        slot.kv_tokens = []  # unknown until the decode succeeds
        llama_api.decode(slot.context, tokens[keep:])
        slot.kv_tokens = list(tokens)
        return keep

    # ---- chat --------------------------------------------------------------------------------

    def _chat_formatter(self) -> Any:
        """llama-cpp-python's Jinja2 formatter over the GGUF's chat template, or None."""
        template = llama_api.chat_template(self.model)
        if template is None:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos, eos = llama_api.bos_eos_text(self.model)
        self._bos_text = bos if llama_api.adds_bos(self.model) else ""
        try:
            return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        except Exception as exc:  # jinja2.TemplateSyntaxError and kin
            raise ConfigError(f"the chat template of {self.model.path} "
                              f"(tokenizer.chat_template) does not compile: {exc}") from exc

    @property
    def chat_template(self) -> Optional[str]:
        """The model's own chat template, or None (then ``format_chat`` renders plainly)."""
        return None if self._chat is None else self._chat.template

    def format_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt for a conversation (a list of ``{"role", "content"}`` string mappings),
        rendered by the model's chat template with the assistant's turn opened, else
        ``role: content`` lines ending with ``assistant:``."""
        from edge.runtime import render_chat_plainly

        checked = _checked_messages(messages)
        if self._chat is None:
            return render_chat_plainly(checked)
        try:
            prompt = self._chat(messages=checked).prompt
        except Exception as exc:  # the template's raise_exception (ValueError), jinja2 errors
            raise RequestError(f"the chat template of {os.path.basename(self.model.path)} "
                               f"refused the messages: {exc}") from exc
        if self._bos_text and prompt.startswith(self._bos_text):
            # The tokenizer adds BOS itself; a second one degrades the answer.
            prompt = prompt[len(self._bos_text):]
        return prompt

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
        """Wait for the generations in flight, then free every context and the model (and any
        adapter still loaded: the cache unloads its own first). A second call does nothing."""
        with self._pool:
            if self._closed:
                return
            self._closed = True  # a request waiting for a context now fails
            self._pool.notify_all()
            while any(slot.serving is not None for slot in self._slots):
                self._pool.wait()
        with self._gate.exclusive():
            self.model.close()


def _checked_messages(messages: Any) -> list[dict[str, Any]]:
    """``messages`` as a list of dicts, or a ``RequestError`` naming what is wrong."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise RequestError(f"messages must be a list of {{role, content}} objects, got "
                           f"{type(messages).__name__}")
    if not messages:
        raise RequestError("a chat needs at least one message")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RequestError(f"message {i} must be a {{role, content}} object, got "
                               f"{type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise RequestError(f"message {i} needs a string {key!r}, got "
                                   f"{message.get(key)!r}")
        checked.append(dict(message))
    return checked


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _sample(logits: np.ndarray, temperature: float, rng: Optional[np.random.Generator]
            ) -> tuple[int, np.floating]:
    """The token, and the logits' maximum (the log-softmax needs it too: one pass fewer)."""
    if temperature <= 0:
        token = int(np.argmax(logits))
        return token, logits[token]
    top = logits.max()
    # In float64: a temperature below float32's smallest value would turn into 0 (0/0: NaN).
    z = (logits - top).astype(np.float64) / temperature
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p)), top


def _whole_characters(data: bytes) -> tuple[str, bytes]:
    """The text of ``data`` up to its last complete UTF-8 character, and the rest."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), b""


def _log_softmax_at(logits: np.ndarray, token: int, top: np.floating,
                    scratch: Optional[np.ndarray] = None) -> float:
    """log softmax(logits)[token], ``top`` being the logits' maximum; ``scratch`` (as many
    float32 as logits) saves allocating the terms."""
    # exp in float32 (each term is in (0, 1]), summed in float64: a float64 pass over a
    # 262k-token vocabulary cost 1.4 ms per token.
    terms = np.subtract(logits, top, out=scratch)
    total = np.exp(terms, out=terms).sum(dtype=np.float64)
    return float(logits[token]) - float(top) - float(np.log(total))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{name} must be a positive integer, got {value!r}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)
