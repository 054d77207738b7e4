"""A thin checked layer over llama-cpp-python's low-level LoRA adapter API.

The adapter backend keeps one base model loaded and pages LoRA adapters in and out of memory,
attaching the set each request wants. llama-cpp-python's high-level ``Llama`` takes one
``lora_path`` at construction and cannot swap, so this module calls the C API underneath:
``llama_adapter_lora_init`` (load), ``llama_set_adapters_lora`` (replace the context's set) and
``llama_adapter_lora_free`` (unload). Those names exist from llama-cpp-python 0.3.17 on (0.3.16
and earlier had ``llama_set_adapter_lora`` + ``llama_rm_adapter_lora``), which is why importing
this module checks the installed version and fails with a clear error outside that range.

Ownership and order, the rules of ``llama.h`` (checked here where it costs nothing):

* ``LlamaModel`` owns a ``Llama`` (the model handle and its first context, ``model.context``).
  ``Llama`` is used to load because it fills the version's parameter structs correctly; its own
  eval/generate are never called, so its token bookkeeping and prefix reuse (keyed by tokens
  only, blind to the adapter set) cannot hand back state computed under another adapter.
* ``context_init`` adds a ``LlamaContext`` on the same weights (``llama_init_from_model`` with the
  first context's parameters): its own KV memory and its own adapter set. ``context_free`` frees
  one; ``LlamaModel.close`` frees any left. The first context is freed with the model only.
* An ``Adapter`` belongs to the model it was loaded for and is valid only while that model lives.
  Detach it from every context before freeing it (``adapter_free`` refuses while any context has
  it attached); free adapters before the model (``LlamaModel.close`` detaches and frees any left,
  then frees the added contexts, then the first context and the model).
* ``set_adapters`` replaces one context's whole set; an empty list clears it. The functions that
  act on a context take a ``LlamaContext`` or a ``LlamaModel`` (meaning its first context).
* KV state computed under one adapter set is wrong under another, so ``evaluate`` clears the
  context's memory before it decodes.
* A context's logits stay readable until its next ``decode`` or its free. A reader that defers
  its reading sets ``LlamaContext.before_logits_change``: called (once, then cleared) just before
  either, so it can read them while they are still there.

Not thread-safe: the caller serialises calls on one context, and keeps ``adapter_init``,
``adapter_free``, ``context_init`` and ``context_free`` from running while any context of the
model decodes (edge.backends.llama does both).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from edge.errors import EdgeError

# The range of llama-cpp-python this module supports; pyproject.toml pins the same range.
SUPPORTED_RANGE = ">=0.3.17,<0.4"
MIN_VERSION = (0, 3, 17)
BELOW_VERSION = (0, 4, 0)

REQUIRED_FUNCTIONS = (
    "llama_adapter_lora_init", "llama_set_adapters_lora", "llama_adapter_lora_free",
    "llama_get_memory", "llama_memory_clear", "llama_memory_seq_rm", "llama_batch_get_one",
    "llama_decode", "llama_get_logits_ith", "llama_model_get_vocab", "llama_vocab_n_tokens",
    "llama_vocab_is_eog", "llama_init_from_model", "llama_free", "llama_set_n_threads",
    "llama_vocab_get_add_bos", "llama_vocab_bos", "llama_vocab_eos", "llama_vocab_get_text",
    "llama_tokenize", "llama_token_to_piece",
)
# Texts whose tokens LlamaModel.tokenize keeps (a client repeating its request gets them
# without tokenizing again: ~0.4 ms for a short prompt on Gemma 3's 262k vocabulary), up to
# TOKENIZE_CACHE_BYTES each: a few MB at most.
TOKENIZE_CACHE_SIZE = 32
TOKENIZE_CACHE_BYTES = 32 * 1024


class LlamaApiError(EdgeError):
    """llama.cpp refused an operation (a NULL handle or a failure return code)."""


class UnsupportedLlamaVersion(LlamaApiError, ImportError):
    """The installed llama-cpp-python lacks the adapter API this module calls."""


def parse_version(version: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not match:
        raise UnsupportedLlamaVersion(
            f"cannot read the llama-cpp-python version {version!r}; supported: {SUPPORTED_RANGE}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def check_llama_cpp(version: str, module: ModuleType | None = None) -> None:
    """Raise ``UnsupportedLlamaVersion`` unless ``version`` is in the supported range and
    ``module`` (the low-level ``llama_cpp`` bindings, when given) has every function we call."""
    if not MIN_VERSION <= parse_version(version) < BELOW_VERSION:
        raise UnsupportedLlamaVersion(
            f"llama-cpp-python {version} is installed; the adapter backend needs "
            f"llama-cpp-python{SUPPORTED_RANGE} (llama_adapter_lora_init / "
            f"llama_set_adapters_lora / llama_adapter_lora_free)")
    if module is not None:
        missing = [name for name in REQUIRED_FUNCTIONS if not hasattr(module, name)]
        if missing:
            raise UnsupportedLlamaVersion(
                f"llama-cpp-python {version} lacks {', '.join(missing)}; "
                f"supported: {SUPPORTED_RANGE}")


try:
    import llama_cpp
except ImportError as exc:  # e.g. the shared library failed to load
    raise UnsupportedLlamaVersion(
        f"llama-cpp-python{SUPPORTED_RANGE} is required by the adapter backend: {exc}") from exc

check_llama_cpp(llama_cpp.__version__, llama_cpp)


class LlamaModel:
    """A loaded base model and its contexts; see the module docstring for ownership.

    Made by ``load_model``; wrapping a ``Llama`` built elsewhere also works (the tests wrap one
    built with ``lora_path`` as a reference), but an adapter it attached itself is not tracked.
    """

    def __init__(self, llama: llama_cpp.Llama, path: str) -> None:
        self.llama = llama
        self.path = path
        self.model = llama._model.model  # llama_model *
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_batch = llama.n_batch
        # The Llama's own context; freed by Llama.close, with the model.
        self.context = LlamaContext(self, llama._ctx.ctx, llama.n_ctx(), llama.n_batch,
                                    owned=False)
        self.ctx = self.context.ctx  # llama_context * of the first context
        self.contexts: list[LlamaContext] = [self.context]  # live ones, the first included
        self._live: list[Adapter] = []  # loaded on this model, not yet freed
        self._bos = llama_cpp.llama_vocab_bos(self.vocab)
        # Per model (the tokens are this vocabulary's), bounded, thread-safe (functools' lock).
        self._tokenize_cached = functools.lru_cache(maxsize=TOKENIZE_CACHE_SIZE)(self._tokenize)

    @property
    def closed(self) -> bool:
        return self.llama is None

    @property
    def attached(self) -> list[Adapter]:
        """The first context's adapter set."""
        return self.context.attached

    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = False
                 ) -> list[int]:
        """Tokens of ``text``; ``special=True`` reads control-token text (``<s>``,
        ``<|im_start|>``) as those tokens, as a chat template's rendering needs."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        self._open()
        if len(data) > TOKENIZE_CACHE_BYTES:
            return list(self._tokenize(data, add_bos, special))
        return list(self._tokenize_cached(data, add_bos, special))

    def _tokenize(self, data: bytes, add_bos: bool, special: bool) -> tuple[int, ...]:
        # llama_tokenize itself: llama-cpp-python's wrapper allocates a buffer of the training
        # context's size (32k tokens on Gemma 3) per call. A token covers at least one byte, BOS
        # and EOS aside; a negative return is the size needed.
        size = len(data) + 4
        for _ in range(2):
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, size, add_bos,
                                         special)
            if n >= 0:
                return tuple(buffer[:n])
            size = -n
        raise LlamaApiError(f"llama_tokenize failed on {len(data)} bytes of text ({self.path})")

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """The text of ``tokens`` (control tokens as nothing), as llama-cpp-python's
        ``Llama.detokenize`` gives it, without its wrappers' layers per call."""
        self._open()
        pieces = [self.piece(token) for token in tokens]
        output = b"".join(pieces)
        # llama-cpp-python's rule, kept so that texts match it: a leading space after a first
        # BOS token is dropped (Llama 1 models added one to every prompt).
        if pieces and tokens[0] == self._bos and output[:1] == b" ":
            return output[1:]
        return output

    def piece(self, token: int) -> bytes:
        """One token's text (nothing for a control token)."""
        size = 64
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n  # the piece is longer (a negative return is the size needed)
        raise LlamaApiError(f"llama_token_to_piece failed on token {token} ({self.path})")

    def close(self) -> None:
        """Detach and free every adapter still loaded, then the added contexts, then the first
        context and the model."""
        if self.llama is None:
            return
        for context in self.contexts:
            _logits_change(context)
        for context in self.contexts:
            if context._attached:
                set_adapters(context, [])
        for adapter in list(self._live):
            adapter_free(adapter)
        for context in list(self.contexts):
            if context.owned:
                context_free(context)
        self.llama.close()  # frees its context before the model
        self.context.ctx = None
        self.contexts = []
        self.llama = None

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> llama_cpp.Llama:
        if self.llama is None:
            raise LlamaApiError(f"model {self.path} is closed")
        return self.llama


class LlamaContext:
    """One ``llama_context`` on a ``LlamaModel``: its own KV memory and adapter set. ``ctx`` is
    None once freed; ``owned`` contexts were made by ``context_init`` and are freed by
    ``context_free`` (the model's first context belongs to its ``Llama``)."""

    def __init__(self, model: LlamaModel, ctx: Any, n_ctx: int, n_batch: int, *,
                 owned: bool) -> None:
        self.model = model
        self.ctx: Any = ctx  # llama_context *
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.owned = owned
        self._attached: list[Adapter] = []  # this context's current set
        # Called (then cleared) just before the logits are overwritten or freed: see the
        # module docstring.
        self.before_logits_change: Callable[[], None] | None = None
        self._logits_view: tuple[int, np.ndarray] | None = None  # (address, read-only view)

    @property
    def closed(self) -> bool:
        return self.ctx is None

    @property
    def attached(self) -> list[Adapter]:
        return list(self._attached)

    def __repr__(self) -> str:
        state = "freed" if self.ctx is None else f"{len(self._attached)} adapter(s) attached"
        return f"LlamaContext({self.model.path!r}, {state})"


class Adapter:
    """A LoRA adapter loaded on one ``LlamaModel``; ``handle`` is None once freed."""

    def __init__(self, model: LlamaModel, path: str, handle: Any) -> None:
        self.model = model
        self.path = path
        self.handle: Any = handle  # a ctypes llama_adapter_lora *

    def __repr__(self) -> str:
        state = "freed" if self.handle is None else "loaded"
        return f"Adapter({self.path!r}, {state})"


def load_model(path: str | os.PathLike[str], *, n_ctx: int = 512, seed: int = 0,
               n_threads: int | None = None, n_threads_batch: int | None = None,
               verbose: bool = False) -> LlamaModel:
    """Load a base GGUF with one context of ``n_ctx`` tokens; ``n_threads`` generate,
    ``n_threads_batch`` evaluate prompts (None: llama-cpp-python's defaults, half the cores
    and all of them)."""
    path = os.fspath(path)
    if not verbose:
        # llama-cpp-python routes llama.cpp's log through this logger; it prints every line
        # until something sets a level (Llama(verbose=False) does it only during its own init).
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        llama = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, seed=seed, n_threads=n_threads,
                                n_threads_batch=n_threads_batch, verbose=verbose)
    except (ValueError, RuntimeError) as exc:
        raise LlamaApiError(f"cannot load model {path}: {exc}") from exc
    return LlamaModel(llama, path)


def context_init(model: LlamaModel, *, n_threads: int | None = None,
                 n_threads_batch: int | None = None) -> LlamaContext:
    """A new context on ``model``'s weights, with the parameters of its first context (size,
    batch, threads unless given); the weights are shared, the KV memory is its own."""
    llama = model._open()
    params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
    if n_threads is not None:
        params.n_threads = n_threads
    if n_threads_batch is not None:
        params.n_threads_batch = n_threads_batch
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise LlamaApiError(f"llama_init_from_model failed for another context of "
                            f"{params.n_ctx} tokens on {model.path} (out of memory?)")
    context = LlamaContext(model, ctx, llama_cpp.llama_n_ctx(ctx), model.n_batch, owned=True)
    model.contexts.append(context)
    return context


def context_free(context: LlamaContext) -> None:
    """Free a context made by ``context_init`` (detaching its adapters first); freeing twice is a
    no-op. The model's first context is freed with the model, not here."""
    if not context.owned:
        raise LlamaApiError(f"the first context of {context.model.path} is freed with the "
                            f"model (LlamaModel.close), not by context_free")
    if context.ctx is None:
        return
    _logits_change(context)
    if context._attached:
        set_adapters(context, [])
    llama_cpp.llama_free(context.ctx)
    context.ctx = None
    context.model.contexts.remove(context)


def set_threads(target: LlamaModel | LlamaContext, n_threads: int, n_threads_batch: int) -> None:
    """Threads one context uses to generate (one token at a time) and to decode a batch."""
    context = _context(target)
    llama_cpp.llama_set_n_threads(context.ctx, n_threads, n_threads_batch)


def adds_bos(model: LlamaModel) -> bool:
    """Whether tokenizing with ``add_bos=True`` puts the BOS token first (the vocabulary's
    ``add_bos_token`` flag)."""
    model._open()
    return bool(llama_cpp.llama_vocab_get_add_bos(model.vocab))


def chat_template(model: LlamaModel) -> str | None:
    """The GGUF's ``tokenizer.chat_template`` (a Jinja2 template), or None without one."""
    return model._open().metadata.get("tokenizer.chat_template") or None


def bos_eos_text(model: LlamaModel) -> tuple[str, str]:
    """The text of the BOS and EOS tokens, as a chat template writes them ('' for none)."""
    model._open()

    def text(token: int) -> str:
        if token < 0:  # LLAMA_TOKEN_NULL: the vocabulary has no such token
            return ""
        return (llama_cpp.llama_vocab_get_text(model.vocab, token) or b"").decode(
            "utf-8", errors="replace")

    vocab = model.vocab
    return text(llama_cpp.llama_vocab_bos(vocab)), text(llama_cpp.llama_vocab_eos(vocab))


def _context(target: LlamaModel | LlamaContext) -> LlamaContext:
    """The context a function acts on: the given one, or a model's first; open or raising."""
    context = target.context if isinstance(target, LlamaModel) else target
    context.model._open()
    if context.ctx is None:
        raise LlamaApiError(f"this context of {context.model.path} was freed")
    return context


def adapter_init(model: LlamaModel, path: str | os.PathLike[str]) -> Adapter:
    """Load the LoRA adapter GGUF at ``path`` for ``model`` (not yet attached to anything)."""
    model._open()
    path = os.fspath(path)
    # An F32 adapter over repacked quantised weights (Gemma's Q4_K) makes llama.cpp log "cannot
    # use buft 'CPU_REPACK', fallback to CPU" at ERROR level once per projection, 27 lines per
    # page-in, though the fallback is the normal path. llama-cpp-python prints log lines itself
    # when its logger's level lets them through (no handler or filter applies), so the level is
    # raised for the call: a failed load still raises below, with the file named. (The level is
    # process-wide: another thread's llama.cpp errors in that window are not printed either.)
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        handle = llama_cpp.llama_adapter_lora_init(model.model, path.encode("utf-8"))
    finally:
        logger.setLevel(level)
    if not handle:
        raise LlamaApiError(
            f"llama_adapter_lora_init failed for {path} (missing file, not a LoRA GGUF, or made "
            f"for another architecture or tensor shapes than {model.path})")
    adapter = Adapter(model, path, handle)
    model._live.append(adapter)
    return adapter


def set_adapters(target: LlamaModel | LlamaContext,
                 adapters: Sequence[tuple[Adapter, float]]) -> None:
    """Make ``adapters`` (adapter, scale) the context's whole set; an empty list clears it."""
    context = _context(target)
    model = context.model
    for adapter, _ in adapters:
        if adapter.handle is None:
            raise LlamaApiError(f"{adapter.path} was freed")
        if adapter.model is not model:
            raise LlamaApiError(f"{adapter.path} was loaded for {adapter.model.path}, "
                                f"not {model.path}")
    n = len(adapters)
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*(a.handle for a, _ in adapters))
    scales = (ctypes.c_float * n)(*(float(s) for _, s in adapters))
    status = llama_cpp.llama_set_adapters_lora(context.ctx, handles if n else None, n,
                                               scales if n else None)
    if status != 0:
        names = ", ".join(a.path for a, _ in adapters) or "(none)"
        raise LlamaApiError(f"llama_set_adapters_lora returned {status} for {names}")
    context._attached = [a for a, _ in adapters]


def adapter_free(adapter: Adapter) -> None:
    """Free a loaded adapter; no context may have it attached. Freeing twice is a no-op."""
    if adapter.handle is None:
        return
    holders = [i for i, c in enumerate(adapter.model.contexts) if adapter in c._attached]
    if holders:
        raise LlamaApiError(f"{adapter.path} is attached to context(s) {holders} of "
                            f"{adapter.model.path}; detach it (set_adapters) before freeing")
    llama_cpp.llama_adapter_lora_free(adapter.handle)
    adapter.handle = None
    adapter.model._live.remove(adapter)


def clear_memory(target: LlamaModel | LlamaContext, data: bool = False) -> None:
    """Forget every token the context has seen. The cells are marked free; ``data=True`` also
    zeroes the buffers, which costs a memset of the whole KV cache (about 1 ms for 21 MB here,
    hundreds of MB for a 7B model's context) and changes nothing: decoding overwrites every
    cell it uses before reading it (the logits tests hold either way)."""
    memory = llama_cpp.llama_get_memory(_context(target).ctx)
    if memory:  # a model without a KV cache (none here) has no memory to clear
        llama_cpp.llama_memory_clear(memory, data)


def truncate_memory(target: LlamaModel | LlamaContext, n_tokens: int) -> bool:
    """Keep the first ``n_tokens`` positions of the context's memory and drop the rest; False if
    this memory cannot drop a tail (then clear it instead)."""
    memory = llama_cpp.llama_get_memory(_context(target).ctx)
    if not memory:
        return False
    return bool(llama_cpp.llama_memory_seq_rm(memory, 0, n_tokens, -1))


def is_end_of_generation(model: LlamaModel, token: int) -> bool:
    return bool(llama_cpp.llama_vocab_is_eog(model.vocab, token))


def decode(target: LlamaModel | LlamaContext, tokens: Sequence[int]) -> None:
    """Append ``tokens`` to the context, in chunks of at most n_batch; only the last token's
    logits are computed."""
    context = _context(target)
    _logits_change(context)
    for start in range(0, len(tokens), context.n_batch):
        chunk = tokens[start:start + context.n_batch]
        array = (llama_cpp.llama_token * len(chunk))(*chunk)  # alive until decode returns
        status = llama_cpp.llama_decode(context.ctx,
                                        llama_cpp.llama_batch_get_one(array, len(chunk)))
        if status != 0:
            raise LlamaApiError(f"llama_decode returned {status} on {len(chunk)} tokens "
                                f"at position {start} ({context.model.path})")


def last_logits(target: LlamaModel | LlamaContext, *, copy: bool = True) -> np.ndarray:
    """The last decoded token's logits, shape (n_vocab,): a copy, or with ``copy=False`` a
    read-only view of the context's buffer, valid only until its next decode (a 262k-token
    vocabulary makes the copy cost a visible fraction of a millisecond per token)."""
    context = _context(target)
    pointer = llama_cpp.llama_get_logits_ith(context.ctx, -1)
    if not pointer:
        raise LlamaApiError(f"no logits to read: nothing decoded yet ({context.model.path})")
    # A view costs tens of microseconds to make (ctypes builds an array type), and llama.cpp
    # keeps its output buffer between decodes: the view of the same address is reused.
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    if context._logits_view is not None and context._logits_view[0] == address:
        logits = context._logits_view[1]
    else:
        logits = np.ctypeslib.as_array(pointer, shape=(context.model.n_vocab,))
        logits.flags.writeable = False
        context._logits_view = (address, logits)
    return logits.copy() if copy else logits


def _logits_change(context: LlamaContext) -> None:
    """Let a deferred reader of the context's logits read them before they change."""
    hook = context.before_logits_change
    if hook is not None:
        context.before_logits_change = None
        hook()


def evaluate(target: LlamaModel | LlamaContext, tokens: Sequence[int]) -> np.ndarray:
    """Logits after ``tokens``, computed from scratch under the context's current adapter set."""
    if not tokens:
        raise ValueError("evaluate needs at least one token")
    clear_memory(target)
    decode(target, tokens)
    return last_logits(target)


def generate_greedy(target: LlamaModel | LlamaContext, tokens: Sequence[int], max_tokens: int
                    ) -> list[int]:
    """Up to ``max_tokens`` new tokens, each the argmax of the logits, stopping at end of
    generation; starts from scratch like ``evaluate``."""
    model = _context(target).model
    logits = evaluate(target, tokens)
    out: list[int] = []
    for _ in range(max_tokens):
        token = int(np.argmax(logits))
        if is_end_of_generation(model, token):
            break
        out.append(token)
        decode(target, [token])
        logits = last_logits(target)
    return out
