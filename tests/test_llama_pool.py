"""The llama backend's pool of contexts over one model, and its chat template, on real llama.cpp.

References are computed independently of the code under test: a fresh model evaluated from
scratch with the adapter attached (edge.backends.llama_api, one context), a single-context
``LlamaBackend`` as the peer of a pooled one, and llama-cpp-python's own chat completion for the
model's chat template. Expected chat renderings are written out by hand.
"""

from __future__ import annotations

import threading

import gguf
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from llama_cpp import Llama
from threads import run_threads

from edge.backends import llama_api
from edge.backends.llama import LlamaBackend
from edge.backends.llama_api import LlamaApiError
from edge.catalogue import Catalogue
from edge.errors import ConfigError, RequestError
from edge.runtime import InferenceRequest

N_CTX = 256
PREFIX = "Once upon a time, the adapter"


def request(prompt: str, max_tokens: int = 12) -> InferenceRequest:
    return InferenceRequest(prompt=prompt, params={"max_tokens": max_tokens})


class Pool:
    """A backend with the tiny adapters loaded: ``objects(name)`` is what the cache would hand
    ``serve`` for that adapter (None: the base model)."""

    def __init__(self, tiny_models, n_contexts: int) -> None:
        self.backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX, n_contexts=n_contexts)
        self.catalogue = Catalogue.from_files(
            {f"a{i}": p for i, p in enumerate(tiny_models.adapters)})
        self.loaded = {name: self.backend.load(self.catalogue[name])[0]
                       for name in self.catalogue}

    def objects(self, name):
        return [] if name is None else [(self.catalogue[name], self.loaded[name])]

    def serve(self, prompt: str, name, max_tokens: int = 12):
        return self.backend.serve(request(prompt, max_tokens), self.objects(name))

    def stream(self, prompt: str, name, max_tokens: int = 12):
        return self.backend.serve_stream(request(prompt, max_tokens), self.objects(name))


@pytest.fixture
def pool2(tiny_models):
    pool = Pool(tiny_models, n_contexts=2)
    yield pool
    pool.backend.close()


@pytest.fixture
def pool1(tiny_models):
    pool = Pool(tiny_models, n_contexts=1)
    yield pool
    pool.backend.close()


@pytest.fixture(scope="module")
def fresh(tiny_models):
    """``fresh(name, prompt, max_tokens)``: greedy text of a fresh single-context model with that
    adapter (or none), from scratch; memoised."""
    paths = {f"a{i}": p for i, p in enumerate(tiny_models.adapters)}
    model = llama_api.load_model(tiny_models.base, n_ctx=N_CTX)
    adapters = {name: llama_api.adapter_init(model, path) for name, path in paths.items()}
    memo = {}

    def run(name, prompt, max_tokens=12):
        if (name, prompt, max_tokens) not in memo:
            llama_api.set_adapters(model, [] if name is None else [(adapters[name], 1.0)])
            tokens = llama_api.generate_greedy(model, model.tokenize(prompt), max_tokens)
            memo[name, prompt, max_tokens] = model.detokenize(tokens).decode(
                "utf-8", errors="replace")
        return memo[name, prompt, max_tokens]

    yield run
    model.close()


def drain(stream):
    """Run a ``serve_stream`` generator to its end; its ``Completion``."""
    while True:
        try:
            next(stream)
        except StopIteration as done:
            return done.value


# ---- concurrency -------------------------------------------------------------------------------

def test_two_contexts_generate_at_once_without_a_global_lock(pool2, fresh):
    # The first request holds context 0 mid-generation; with one lock for the whole model the
    # second would wait until the first is drained, which happens only after it: a deadlock,
    # reported by run_threads' timeout.
    held = pool2.stream(PREFIX, "a0", max_tokens=16)
    first_piece = next(held)
    other = []
    run_threads([lambda: other.append(pool2.serve(PREFIX + " went", "a1"))], timeout=30)
    assert other[0].text == fresh("a1", PREFIX + " went")
    rest = drain(held)
    assert rest.text == fresh("a0", PREFIX, 16) and rest.text.startswith(first_piece)


def test_concurrent_threads_get_the_single_context_output(pool2, pool1):
    jobs = [("a0", PREFIX), ("a1", PREFIX), ("a2", PREFIX + " said"), (None, PREFIX + " said")]
    expected = {job: pool1.serve(job[1], job[0], 24).text for job in jobs}
    assert len(set(expected.values())) == 4  # the adapters make a difference here
    start = threading.Barrier(len(jobs))
    results, lock = [], threading.Lock()

    def worker(job):
        def run():
            start.wait(timeout=30)
            for _ in range(3):  # four callers, two contexts: the surplus waits for one
                text = pool2.serve(job[1], job[0], 24).text
                with lock:
                    results.append((job, text))
        return run

    run_threads([worker(job) for job in jobs])
    assert len(results) == 12
    assert [(job, text) for job, text in results if text != expected[job]] == []
    assert all(slot.serving is None for slot in pool2.backend._slots)


def test_alternating_adapter_sets_on_a_shared_prefix_match_fresh_runs(pool2, fresh):
    # Two contexts, three adapter sets: some requests find their set's KV, others evict one.
    sequence = ["a0", "a1", "a0", "a1", None, "a1", "a2", "a0", None, "a0"]
    reused = []
    for i, name in enumerate(sequence):
        prompt = PREFIX + " and" * (i % 3 + 1)
        out = pool2.serve(prompt, name, max_tokens=10)
        assert out.text == fresh(name, prompt, 10), (i, name)
        reused.append(out.reused_tokens)
    assert any(reused)  # some prefix KV was kept, so the reuse path ran under the comparison


# ---- which context serves -----------------------------------------------------------------------

def test_a_request_goes_to_the_context_that_holds_its_adapters_kv(pool2, pool1, fresh):
    longer = PREFIX + " went on"
    steps = [("a0", PREFIX), ("a1", PREFIX), ("a0", longer), ("a1", longer), ("a2", longer)]
    pooled = [pool2.serve(prompt, name) for name, prompt in steps]
    single = [pool1.serve(prompt, name) for name, prompt in steps]
    for (name, prompt), out in zip(steps, pooled, strict=True):
        assert out.text == fresh(name, prompt)
    # a0 and a1 each kept their own context: the third and fourth requests extend their KV.
    assert pooled[2].reused_tokens > 0 and pooled[3].reused_tokens > 0
    assert pooled[2].reused_tokens == len(pool2.backend.model.tokenize(PREFIX))
    # Another adapter set on the same prefix reuses nothing.
    assert pooled[4].reused_tokens == 0
    # The peer: one context alternating a0/a1 can never reuse.
    assert [out.reused_tokens for out in single] == [0, 0, 0, 0, 0]


# ---- adapters across contexts -------------------------------------------------------------------

def attach_in_both_contexts(pool, name, prompt):
    held = pool.stream(prompt, name)
    next(held)  # context 0 is generating with it
    pool.serve(prompt, name)  # so this one runs on context 1
    drain(held)


def test_unload_detaches_an_adapter_from_every_context(pool2, fresh):
    adapter = pool2.loaded["a0"]
    attach_in_both_contexts(pool2, "a0", PREFIX)
    assert all(adapter in context.attached for context in pool2.backend.contexts)
    pool2.backend.unload(pool2.catalogue["a0"], adapter)
    assert adapter.handle is None
    assert not any(adapter in context.attached for context in pool2.backend.contexts)
    # Both contexts now answer as the base model, with nothing of a0's KV reused.
    held = pool2.stream(PREFIX, None)
    first = next(held)
    other = pool2.serve(PREFIX, None)
    rest = drain(held)
    assert other.text == rest.text == fresh(None, PREFIX) and rest.text.startswith(first)
    assert other.reused_tokens == rest.reused_tokens == 0


def test_unloading_an_adapter_a_context_is_serving_with_is_refused(pool2, fresh):
    held = pool2.stream(PREFIX, "a1")
    next(held)
    with pytest.raises(LlamaApiError, match="context 0 is serving a request with it"):
        pool2.backend.unload(pool2.catalogue["a1"], pool2.loaded["a1"])
    assert pool2.loaded["a1"].handle is not None
    assert drain(held).text == fresh("a1", PREFIX)


# ---- lifetime and settings ----------------------------------------------------------------------

def test_close_frees_every_context_and_is_idempotent(tiny_models):
    pool = Pool(tiny_models, n_contexts=3)
    contexts = pool.backend.contexts
    assert len(contexts) == 3 == pool.backend.slots and len(set(map(id, contexts))) == 3
    attach_in_both_contexts(pool, "a2", PREFIX)
    pool.backend.close()
    assert all(context.closed for context in contexts) and pool.backend.model.closed
    assert all(adapter.handle is None for adapter in pool.loaded.values())
    pool.backend.close()
    with pytest.raises(LlamaApiError, match="closed"):
        pool.serve(PREFIX, None)


def test_threads_are_split_between_contexts(tiny_models):
    backend = LlamaBackend(tiny_models.base, n_ctx=64, n_threads=4, n_contexts=2)
    try:
        import llama_cpp

        per_context = [llama_cpp.llama_n_threads(c.ctx) for c in backend.contexts]
        assert per_context == [2, 2]
    finally:
        backend.close()


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True, None])
def test_a_bad_number_of_contexts_is_named(tiny_models, bad):
    with pytest.raises(ConfigError, match=r"n_contexts must be a positive integer .* got "):
        LlamaBackend(tiny_models.base, n_ctx=64, n_contexts=bad)


# ---- the chat template --------------------------------------------------------------------------

# A template in the style of the chat models' (ChatML-like markers, BOS first, EOS after each
# turn, an exception for a conversation that does not start with the system or the user).
TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] not in ['system', 'user'] %}"
    "{{ raise_exception('the first message must be the system or the user') }}{% endif %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
# By hand: the tiny vocabulary's BOS is "<s>" (dropped: the tokenizer adds it) and EOS "</s>".
RENDERED = "<|system|>Be brief.</s>\n<|user|>Hello there</s>\n<|assistant|>"


@pytest.fixture(scope="module")
def templated_base(tiny_models, tmp_path_factory):
    """A copy of the tiny base GGUF with ``tokenizer.chat_template`` added."""
    path = tmp_path_factory.mktemp("templated") / "base-with-template.gguf"
    reader = gguf.GGUFReader(tiny_models.base)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(path, arch=arch)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
        gguf.GGUFValueType.STRING, TEMPLATE)}, [])
    return path


def test_a_model_without_a_template_renders_role_lines(pool1):
    assert pool1.backend.chat_template is None
    assert pool1.backend.format_chat(MESSAGES) == \
        "system: Be brief.\nuser: Hello there\nassistant:"


def test_the_models_own_template_renders_the_chat(templated_base):
    backend = LlamaBackend(templated_base, n_ctx=N_CTX)
    try:
        assert backend.chat_template == TEMPLATE
        assert backend.format_chat(MESSAGES) == RENDERED
        with pytest.raises(RequestError, match="the first message must be the system or the user"):
            backend.format_chat([{"role": "assistant", "content": "hi"}])
        out = backend.serve(request(backend.format_chat(MESSAGES), 8), [])
    finally:
        backend.close()
    # The peer: llama-cpp-python's own chat completion over the same template (it renders with
    # the same formatter and tokenizes control-token text as control tokens, BOS once).
    peer = Llama(model_path=str(templated_base), n_ctx=N_CTX, verbose=False)
    try:
        answer = peer.create_chat_completion(MESSAGES, temperature=0.0, max_tokens=8)
    finally:
        peer.close()
    assert out.prompt_tokens == answer["usage"]["prompt_tokens"]
    # llama-cpp-python drops the bytes of an incomplete character where this backend writes
    # U+FFFD, and it may go past max_tokens to complete a character (9 tokens here for 8).
    assert out.completion_tokens == 8 <= answer["usage"]["completion_tokens"]
    assert len(out.text) > 3
    assert answer["choices"][0]["message"]["content"].startswith(out.text.replace("\ufffd", ""))


@pytest.mark.parametrize("messages, problem", [
    ("hello", "messages must be a list of {role, content} objects, got str"),
    ({"role": "user", "content": "hi"}, "messages must be a list of {role, content} objects"),
    ([], "a chat needs at least one message"),
    ([42], "message 0 must be a {role, content} object, got int"),
    ([{"role": "user"}], "message 0 needs a string 'content', got None"),
    ([{"role": "user", "content": "a"}, {"role": 1, "content": "b"}],
     "message 1 needs a string 'role', got 1"),
])
def test_malformed_messages_are_named(pool1, templated_base, messages, problem):
    with pytest.raises(RequestError) as plain:
        pool1.backend.format_chat(messages)
    assert problem in str(plain.value)
    backend = LlamaBackend(templated_base, n_ctx=64)
    try:
        with pytest.raises(RequestError) as templated:
            backend.format_chat(messages)
        assert problem in str(templated.value)
    finally:
        backend.close()
