"""``edge moe run``: generate real tokens from a MoE GGUF with its experts paged from disk.

The numpy forward pass (``edge.moe.model.MoeModel``) runs each prompt; every MoE layer pins its
chosen experts from one ``PagedCache`` under ``--budget`` with ``--policy``, reading misses from
the file with positional reads. The cache stays warm from prompt to prompt, as it would for a
stream of requests. Prints, per prompt, the generated text, then tokens/s, hit ratio and bytes
read; ``--json FILE`` writes the same figures (atomically), ``--routing FILE.npy`` every token's
experts as the (tokens, layers, top_k) array ``edge moe analyze`` reads.

``--prefetch on`` predicts each next layer's experts while a layer runs and reads them on the
cache's background load workers; ``--prefetch readahead`` has the kernel read them into the OS
page cache instead, the layer's loads then copying them from memory (``--predictor``: the next
layer's router, the learned cross-layer transition table, or both; see ``edge.moe.prefetch``);
the figures then include the prefetch counters (issued, useful, wasted bytes, precision and
recall of the predictions). ``--page-cache drop`` reads experts past the OS page cache, so
every load reads the disk (``ExpertStore(page_cache=False)``).

``--budget`` is bytes (``4MiB``) or a multiple of the active experts (``2x``: twice top_k
experts per MoE layer, summed over the layers). Prompts are tokenized by llama.cpp's tokenizer
for the file (vocabulary only; no weights are loaded). llama.cpp, numpy and the cache are
imported inside the command so that ``edge --help`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import click

from edge.cli_errors import friendly_errors

DEFAULT_PROMPTS = ("The quick brown fox", "Once upon a time", "SELECT name FROM users")
PREFETCH_WORKERS = 2  # background readers with --prefetch on (else loads in the calling thread)
PREFETCH_MODES = {"off": False, "on": "load", "readahead": "readahead"}  # MoeModel's prefetch
_MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$", re.IGNORECASE)


def budget_bytes(value: str, expert_bytes: int, n_expert_used: int, n_moe_layers: int) -> int:
    """``--budget`` in bytes: a size (parse_bytes) or ``<N>x`` active experts."""
    from edge.schema import parse_bytes

    match = _MULTIPLE.match(value)
    if match:
        multiple = float(match.group(1))
        if multiple <= 0:
            raise click.BadParameter(f"{value!r}: the multiple must be > 0", param_hint="--budget")
        return int(multiple * n_expert_used * n_moe_layers) * expert_bytes
    try:
        return parse_bytes(value, "--budget")
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (or a multiple of the active experts, e.g. 2x)",
                                 param_hint="--budget") from None


class _Tokenizer:
    """llama.cpp's tokenizer for the file, vocabulary only."""

    def __init__(self, path: Path) -> None:
        import logging

        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        try:  # a vocabulary-only load still warns "n_ctx_seq > n_ctx_train (0)" on fd 2
            from llama_cpp._utils import suppress_stdout_stderr
            quiet = suppress_stdout_stderr(disable=False)
        except ImportError:
            quiet = contextlib.nullcontext()
        with quiet:
            self._llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.eos = self._llama.token_eos()

    def encode(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=True)

    def decode(self, tokens: list[int]) -> str:
        return self._llama.detokenize(tokens).decode("utf-8", errors="replace")

    def close(self) -> None:
        self._llama.close()


@click.command("run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", default="2x", show_default=True,
              help="Expert cache budget: bytes (4MiB), or a multiple of the active experts "
                   "(2x: twice top_k experts per layer, summed over layers).")
@click.option("--policy", default="lru", show_default=True,
              help="Eviction policy of the expert cache: lru, s3fifo, learned, ...")
@click.option("--prefetch", type=click.Choice(["off", "on", "readahead"]), default="off",
              show_default=True,
              help="Prefetch each next layer's predicted experts: on: loaded into the cache by "
                   "background readers; readahead: read into the OS page cache by the kernel "
                   "(posix_fadvise), the cache loading them from memory when asked.")
@click.option("--predictor", type=click.Choice(["router", "transitions", "both"]),
              default="router", show_default=True,
              help="With --prefetch: how the next layer's experts are predicted.")
@click.option("--page-cache", type=click.Choice(["keep", "drop"]), default="keep",
              show_default=True,
              help="drop: read experts past the OS page cache (no readahead, pages dropped "
                   "once read), so every load reads the disk and only the budget holds "
                   "experts in RAM: the regime of a model larger than RAM (Linux).")
@click.option("--prompt", "prompts", multiple=True,
              help="A prompt (repeatable); default: three short built-in ones.")
@click.option("--max-tokens", type=click.IntRange(0), default=32, show_default=True,
              help="Tokens generated per prompt.")
@click.option("--temperature", type=click.FloatRange(0.0), default=0.0, show_default=True,
              help="0: greedy; else sampled with --seed.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sampling (with --temperature > 0).")
@click.option("--n-ctx", type=click.IntRange(1), default=512, show_default=True,
              help="Tokens of the KV cache: prompt + generated.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures to this JSON file.")
@click.option("--routing", "routing_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every token's experts to this .npy file (tokens, layers, top_k).")
@click.option("--quiet", is_flag=True, help="Print only the figures, not the generated text.")
@friendly_errors
def run(model: Path, budget: str, policy: str, prefetch: str, predictor: str, page_cache: str,
        prompts: tuple[str, ...], max_tokens: int,
        temperature: float, seed: int, n_ctx: int, json_path: Path | None,
        routing_path: Path | None, quiet: bool) -> None:
    """Generate from MODEL (a MoE GGUF) with experts paged from disk under a budget."""
    from edge.backends.experts import ExpertStore
    from edge.cache import PagedCache
    from edge.fileio import write_atomic
    from edge.moe.model import MoeModel
    from edge.schema import format_bytes

    store = ExpertStore(model, page_cache=page_cache == "keep")
    try:
        layout = store.layout
        limit = budget_bytes(budget, store.nbytes(layout.moe_layers[0], 0),
                             layout.n_expert_used, len(layout.moe_layers))
        with PagedCache(limit, policy, loader=store.load_key, sizer=store.size_of_key,
                        load_workers=PREFETCH_WORKERS if prefetch == "on" else 0) as cache:
            moe = MoeModel(store, cache, n_ctx=n_ctx, record_routing=routing_path is not None,
                           prefetch=PREFETCH_MODES[prefetch], predictor=predictor)
            tokenizer = _Tokenizer(model)
            try:
                generated, seconds = 0, 0.0
                for i, text in enumerate(prompts or DEFAULT_PROMPTS):
                    started = time.perf_counter()
                    out = moe.generate(tokenizer.encode(text), max_tokens,
                                       temperature=temperature, seed=seed + i,
                                       stop=lambda token: token == tokenizer.eos)
                    seconds += time.perf_counter() - started
                    generated += len(out)
                    if not quiet:
                        click.echo(f"{text}{tokenizer.decode(out)}")
            finally:
                tokenizer.close()
            counters = moe.counters()
            prefetched = moe.prefetch_counters()
            routing = moe.routing() if routing_path is not None else None
    finally:
        store.close()
    figures = {"model": str(model), "budget": limit, "policy": policy, "page_cache": page_cache,
               "tokens": generated, "seconds": seconds,
               "tokens_per_s": generated / seconds if seconds else 0.0, **counters.as_dict(),
               "prefetch": None if prefetched is None else
               {"mode": prefetch, "predictor": predictor, **prefetched.as_dict()}}
    click.echo(f"{generated} tokens in {seconds:.2f} s ({figures['tokens_per_s']:.1f} tokens/s); "
               f"budget {format_bytes(limit)} ({policy}); hit ratio {counters.hit_ratio:.3f} "
               f"({counters.hits} hits, {counters.misses} misses); "
               f"{counters.bytes_read} bytes read")
    if prefetched is not None:
        click.echo(f"prefetch ({prefetch}, {predictor}): {prefetched.issued} issued, "
                   f"{prefetched.useful} useful, {prefetched.wasted_bytes} bytes wasted; "
                   f"predictions precision "
                   f"{prefetched.precision:.3f}, recall {prefetched.recall:.3f}")
    if json_path is not None:
        write_atomic(json_path, (json.dumps(figures, indent=2) + "\n").encode())
    if routing is not None:
        from edge.moe.traces import save_routing

        save_routing(routing, routing_path)
