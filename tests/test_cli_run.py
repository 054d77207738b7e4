"""``edge run`` against real llama.cpp with the tiny generated models.

The reference for each run is the library itself, apart from the command: ``Runtime.complete``
(or ``Runtime.chat``) on a runtime of its own built from the same policy file, greedy. A fresh
runtime makes the same first routing decision as the command's fresh one, so ``auto`` is
compared too.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edge.backends.llama import LlamaBackend
from edge.cli import main
from edge.runtime import Runtime

PROMPT = "Once upon a time, the adapter"
NAMES = ("lora-0-r4", "lora-1-r16", "lora-2-r8")  # the tiny adapters' file stems
N_CTX = 256
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def policy_file(tiny_models, tmp_path_factory):
    budget = sum(p.stat().st_size for p in tiny_models.adapters)
    path = tmp_path_factory.mktemp("run") / "policy.yaml"
    path.write_text(f"cache: {{budget: {budget}, load_workers: 0}}\n"
                    "router: {features: {dim: 16}}\n"
                    f"catalogue: {{directory: '{tiny_models.base.parent}', "
                    "pattern: 'lora-*.gguf'}\n")
    return path


def fresh_runtime(tiny_models, policy_file) -> Runtime:
    return Runtime.from_config(policy_file, backend=LlamaBackend(tiny_models.base, n_ctx=N_CTX))


@pytest.fixture(scope="module")
def reference(tiny_models, policy_file):
    """reference(adapter) -> the greedy Completion of PROMPT, from Runtime.complete."""
    runtime = fresh_runtime(tiny_models, policy_file)
    memo = {}

    def complete(adapter, prompt=PROMPT):
        key = (adapter, prompt)
        if key not in memo:
            memo[key] = runtime.complete(prompt, adapter=adapter, max_tokens=MAX_TOKENS,
                                         temperature=0.0).output
        return memo[key]

    yield complete
    runtime.close()


def edge_run(tiny_models, policy_file, *args, prompt=PROMPT, input=None):
    return CliRunner().invoke(main, ["run", prompt, "--config", str(policy_file), "--model",
                                     str(tiny_models.base), "--n-ctx", str(N_CTX),
                                     "--max-tokens", str(MAX_TOKENS), *args], input=input)


def test_the_references_differ_by_adapter(reference):
    # Otherwise a command that ignored --adapter would pass the tests below.
    texts = {name: reference(name).text for name in NAMES}
    assert len(set(texts.values())) == len(NAMES), texts
    assert all(texts.values())


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_a_named_adapter_prints_the_text_of_runtime_complete(tiny_models, policy_file,
                                                             reference, stream):
    for name in (NAMES[1], NAMES[2]):
        result = edge_run(tiny_models, policy_file, "--adapter", name, stream)
        assert result.exit_code == 0, result.output
        assert result.stdout == reference(name).text + "\n"
        assert result.stderr.count("adapter:") == 0  # no --explain: nothing about routing


def test_explain_names_the_named_adapter_on_stderr(tiny_models, policy_file, reference):
    result = edge_run(tiny_models, policy_file, "--adapter", NAMES[0], "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout == reference(NAMES[0]).text + "\n"  # stdout is the text alone
    lines = result.stderr.splitlines()
    explain = lines[lines.index(f"adapter: {NAMES[0]}, named on the command line"):]
    assert explain[1] == "cache: page-in (loaded for this request)"
    assert explain[2].startswith("timings: route ") and "total" in explain[2]
    completion = reference(NAMES[0])
    assert explain[3] == (f"tokens: prompt {completion.prompt_tokens}, completion "
                          f"{completion.completion_tokens} ({completion.finish_reason}), "
                          "reused 0")


def test_auto_routes_as_a_fresh_runtime_does_and_explains_it(tiny_models, policy_file):
    with fresh_runtime(tiny_models, policy_file) as runtime:
        expected = runtime.complete(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0)
    assert expected.routed and expected.adapter in NAMES
    result = edge_run(tiny_models, policy_file, "--explain")  # --adapter auto is the default
    assert result.exit_code == 0, result.output
    assert result.stdout == expected.output.text + "\n"
    lines = result.stderr.splitlines()
    head = f"adapter: {expected.adapter}, routed ({expected.decision.reason})"
    assert head in lines
    at = lines.index(head)
    assert lines[at + 2].startswith(f"scores (best {len(NAMES)}: mean + bonus - penalty")
    rows = lines[at + 3:at + 3 + len(NAMES)]  # one per adapter, best first, the chosen marked
    assert {row.lstrip(" *").split()[0] for row in rows} == set(NAMES)
    chosen = [row.lstrip(" *").split()[0] for row in rows if row.lstrip().startswith("*")]
    assert chosen == [expected.adapter]
    scores = [float(row.split()[-1]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_the_base_model_and_a_set_of_adapters(tiny_models, policy_file, reference):
    result = edge_run(tiny_models, policy_file, "--adapter", tiny_models.base.stem, "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout == reference(()).text + "\n"
    assert "adapter: none (base model), named on the command line" in result.stderr
    pair = f"{NAMES[0]}+{NAMES[2]}"
    result = edge_run(tiny_models, policy_file, "--adapter", pair, "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout == reference((NAMES[0], NAMES[2])).text + "\n"
    assert f"adapter: {pair}, named on the command line" in result.stderr


def test_chat_is_runtime_chat_and_dash_reads_stdin(tiny_models, policy_file):
    with fresh_runtime(tiny_models, policy_file) as runtime:
        chat = runtime.chat([{"role": "user", "content": PROMPT}], adapter=NAMES[1],
                            max_tokens=MAX_TOKENS, temperature=0.0).output.text
        plain = runtime.complete(PROMPT, adapter=NAMES[1], max_tokens=MAX_TOKENS,
                                 temperature=0.0).output.text
    assert chat != plain
    result = edge_run(tiny_models, policy_file, "--adapter", NAMES[1], "--chat", prompt="-",
                      input=PROMPT + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == chat + "\n"
    result = edge_run(tiny_models, policy_file, "--adapter", NAMES[1], prompt="-",
                      input=PROMPT + "\n")
    assert result.stdout == plain + "\n"


def test_sampling_with_a_seed_repeats(tiny_models, policy_file):
    args = ("--adapter", NAMES[0], "--temperature", "1.5", "--seed", "7")
    first = edge_run(tiny_models, policy_file, *args)
    again = edge_run(tiny_models, policy_file, *args)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    with fresh_runtime(tiny_models, policy_file) as runtime:
        expected = runtime.complete(PROMPT, adapter=NAMES[0], max_tokens=MAX_TOKENS,
                                    temperature=1.5, seed=7).output.text
    assert first.stdout == expected + "\n"


# ---- errors: one line, non-zero exit -------------------------------------------------------------

def one_line_error(result) -> str:
    assert result.exit_code != 0
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_an_unknown_adapter_names_the_known_ones(tiny_models, policy_file):
    error = one_line_error(edge_run(tiny_models, policy_file, "--adapter", "nope"))
    assert "'nope'" in error
    for name in (*NAMES, "auto", tiny_models.base.stem):
        assert repr(name) in error or name in error
    error = one_line_error(edge_run(tiny_models, policy_file, "--adapter", f"{NAMES[0]}+nope"))
    assert "'nope'" in error and NAMES[1] in error


def test_bad_input_is_one_line(tiny_models, policy_file, tmp_path):
    assert "PROMPT is empty" in one_line_error(edge_run(tiny_models, policy_file, prompt="  "))
    assert "PROMPT is empty" in one_line_error(
        edge_run(tiny_models, policy_file, prompt="-", input=""))
    error = one_line_error(edge_run(tiny_models, policy_file, "--adapter", f"{NAMES[0]}+"))
    assert "--adapter" in error and "empty name" in error
    error = one_line_error(edge_run(tiny_models, policy_file, "--budget", "lots"))
    assert "--budget" in error
    # A budget smaller than an adapter: the runtime's own error, naming the adapter.
    error = one_line_error(edge_run(tiny_models, policy_file, "--budget", "100"))
    assert "lora-" in error and "budget" in error
    # No adapter directory anywhere.
    bare = tmp_path / "bare.yaml"
    bare.write_text("cache: {budget: 1MiB}\n")
    result = CliRunner().invoke(main, ["run", PROMPT, "--config", str(bare), "--model",
                                       str(tiny_models.base)])
    assert result.exit_code == 2 and "no adapter directory" in result.stderr
    # A policy file that is not one.
    broken = tmp_path / "broken.yaml"
    broken.write_text("cache: {budget: -5}\n")
    error = one_line_error(CliRunner().invoke(main, ["run", PROMPT, "--config", str(broken),
                                                     "--model", str(tiny_models.base)]))
    assert "budget" in error
    # A base model that is not a GGUF.
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    error = one_line_error(edge_run(tiny_models, policy_file, "--model", str(fake)))
    assert "fake.gguf" in error


def test_the_model_can_come_from_the_policy_files_daemon_section(tiny_models, policy_file,
                                                                  reference, tmp_path):
    from edge.config import EdgeConfig

    if "daemon" not in EdgeConfig.__dataclass_fields__:
        pytest.skip("this edge's policy file has no daemon section")
    with_model = tmp_path / "with-model.yaml"
    with_model.write_text(policy_file.read_text() + f"daemon: {{model: '{tiny_models.base}', "
                          f"n_ctx: {N_CTX}}}\n")
    result = CliRunner().invoke(main, ["run", PROMPT, "--config", str(with_model), "--adapter",
                                       NAMES[2], "--max-tokens", str(MAX_TOKENS)])
    assert result.exit_code == 0, result.output
    assert result.stdout == reference(NAMES[2]).text + "\n"
    result = CliRunner().invoke(main, ["run", PROMPT, "--config", str(policy_file)])
    assert result.exit_code == 2 and "no base model" in result.stderr
