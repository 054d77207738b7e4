"""Convert a Hugging Face PEFT LoRA adapter into llama.cpp's GGUF LoRA format, for one base GGUF.

What llama.cpp's ``convert_lora_to_gguf.py`` does, without torch, transformers or the base
model's Hugging Face config: everything it needs is read from the base GGUF itself (the
architecture, the block and head counts, every tensor's name and shape).

    conversion = plan_peft("my-lora/", "base.gguf")        # reads and checks, writes nothing
    convert_peft("my-lora/", "base.gguf", "adapters/my-lora.gguf")

The rules, and where they come from:

* Names. A PEFT tensor ``base_model.model.<module>.lora_A.weight`` belongs to the base tensor
  that Hugging Face calls ``<module>.weight``; that name goes through the ``gguf`` package's
  ``TensorNameMap`` for the base's architecture and block count, the same table
  ``convert_hf_to_gguf.py`` uses, so this module holds no name table of its own. The GGUF
  tensors are ``<gguf name>.lora_a`` and ``<gguf name>.lora_b``.
* Layout. PEFT keeps ``nn.Linear``'s layout: A is (r, n_in), B is (n_out, r) in numpy terms,
  which is what llama.cpp wants (the gguf writer reverses numpy shapes into ggml's order), so
  A and B are written as they are.
* The llama q/k permutation. ``convert_hf_to_gguf.py`` reorders the rows of Hugging Face's
  q_proj/k_proj weights for llama-family architectures (``LlamaModel.permute``: within each head,
  the two rotary halves are interleaved, because llama.cpp's rotary embedding pairs adjacent
  dimensions). A LoRA delta B @ A on those weights must be reordered the same way; in
  ``convert_lora_to_gguf.py`` the permute reaches ``LoraTorchTensor.permute``/``reshape``, which
  apply it to B's rows and leave A untouched. ``QK_PERMUTED_ARCHS`` lists where it applies.
* Scale. llama.cpp applies ``user_scale * alpha / rank`` with one ``adapter.lora.alpha`` per file
  and each tensor's own rank; PEFT's scale is ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA),
  per module through ``rank_pattern``/``alpha_pattern``. The file's alpha is ``lora_alpha`` (times
  sqrt(r) with rsLoRA); a module whose PEFT scale differs from what that alpha gives has the
  ratio folded into its B, so the applied delta is PEFT's exactly (up to float rounding).
* Types. F16 in gives F16 out; anything else (F32, BF16, a mix) gives F32, which holds BF16
  exactly.

Refused, each with an error naming the file and the feature: pickled ``adapter_model.bin``,
non-LoRA PEFT types, DoRA, ``modules_to_save`` and other full-weight tensors, embedding LoRA,
LoRA biases, activated LoRA, tensors whose module has no GGUF name for the base's architecture
(listed), shapes that do not fit the base (listed), ranks that contradict the config, and q/k
targets on an architecture whose q/k layout this module does not know.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from edge.errors import EdgeError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"

# GGUF architectures whose Hugging Face -> GGUF conversion permutes q_proj/k_proj rows
# (``undo_permute = True`` on llama.cpp's LlamaModel and its subclasses: Arcee, SmolLM3,
# LlamaBidirectional, Ministral3, Granite, GraniteMoe, GraniteHybrid).
QK_PERMUTED_ARCHS = frozenset({
    "llama", "arcee", "smollm3", "llama-embed", "mistral3",
    "granite", "granitemoe", "granitehybrid",
})
# Architectures whose conversion copies q/k as they are (Qwen2/3 and Gemma are plain TextModels
# in llama.cpp's converter; Llama 4 and Apertus set ``undo_permute = False``).
QK_UNPERMUTED_ARCHS = frozenset({
    "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "llama4", "apertus",
})

# Prefix rewrites convert_lora_to_gguf.py applies before mapping a name (multimodal bases).
_LANGUAGE_MODEL_PREFIXES = (("model.language_model.", "model."), ("language_model.", ""))
_LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
_SAFETENSORS_MAX_HEADER = 100 << 20  # the reference implementation's own limit
_SAFETENSORS_FLOATS = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_MAX_LISTED = 8  # names quoted in one error message before "and N more"
_ARRAY = object()  # a header value that is an array (per-layer head counts)


class PeftConversionError(EdgeError, ValueError):
    """A PEFT adapter cannot be converted for this base; the message names the file and why."""


@dataclass(frozen=True)
class LoraPair:
    """One converted target: the base tensor it modifies and its A (r, n_in), B (n_out, r)."""

    base_name: str  # e.g. "blk.0.attn_q.weight"
    source_module: str  # the PEFT module, e.g. "model.layers.0.self_attn.q_proj"
    a: np.ndarray
    b: np.ndarray
    permuted: bool  # B's rows reordered for llama.cpp's q/k layout
    scale_folded: float  # factor multiplied into B (1.0: none)

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass(frozen=True)
class PeftConversion:
    """What ``write_lora_gguf`` writes: read and checked, nothing on disk yet."""

    source: Path  # the PEFT directory
    base: Path  # the base GGUF
    arch: str
    alpha: float  # adapter.lora.alpha
    dtype: np.dtype  # of every written tensor
    pairs: tuple[LoraPair, ...]
    base_model_name_or_path: str | None  # what adapter_config.json says it was trained on
    base_info: Any = field(default=None, repr=False, compare=False)  # catalog.BaseModelInfo

    @property
    def ranks(self) -> list[int]:
        return sorted({pair.rank for pair in self.pairs})

    @property
    def tensor_bytes(self) -> int:
        return sum((pair.a.size + pair.b.size) * self.dtype.itemsize for pair in self.pairs)


@dataclass(frozen=True)
class _Base:
    path: Path
    arch: str
    n_blocks: int
    n_head: int | object | None  # _ARRAY: a per-layer list
    n_head_kv: int | object | None
    shapes: dict[str, tuple[int, ...]]  # numpy order, in the file's tensor order
    info: Any  # edge.backends.catalog.BaseModelInfo, what the written file is validated against


# --- reading ----------------------------------------------------------------------------------


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a float array (F16, F32, F64 as stored; BF16
    widened to F32 exactly). The format is an 8-byte little-endian header length, a JSON
    header (name -> dtype, shape, data_offsets) and the raw bytes; reading it here keeps
    BF16 (which numpy lacks) and needs no extra dependency."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise PeftConversionError(f"{path}: truncated safetensors file (no header)")
        n_header = int.from_bytes(prefix, "little")
        if n_header > min(_SAFETENSORS_MAX_HEADER, size - 8):
            raise PeftConversionError(f"{path}: not a safetensors file (header length "
                                      f"{n_header} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n_header))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PeftConversionError(f"{path}: not a safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise PeftConversionError(f"{path}: not a safetensors file (header is not an object)")
    start = 8 + n_header
    raw = np.memmap(path, dtype=np.uint8, mode="r") if size > start else np.zeros(0, np.uint8)
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise PeftConversionError(f"{path}: malformed header entry for {name!r}") from exc
        if dtype == "BF16":
            itemsize = 2
        elif dtype in _SAFETENSORS_FLOATS:
            itemsize = _SAFETENSORS_FLOATS[dtype].itemsize
        else:
            raise PeftConversionError(f"{path}: tensor {name!r} has dtype {dtype}; LoRA weights "
                                      f"must be F16, BF16, F32 or F64")
        if not (0 <= begin <= end <= size - start) or end - begin != math.prod(shape) * itemsize:
            raise PeftConversionError(f"{path}: tensor {name!r} has bad data offsets "
                                      f"{[begin, end]} for {dtype} {list(shape)} (truncated?)")
        chunk = raw[start + begin:start + end]
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            array = (chunk.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = chunk.view(_SAFETENSORS_FLOATS[dtype]).astype(
                _SAFETENSORS_FLOATS[dtype].newbyteorder("="))
        tensors[name] = array.reshape(shape)
    return tensors


def read_peft_config(peft_dir: Path) -> dict[str, Any]:
    config_path = peft_dir / CONFIG_FILE
    if not peft_dir.is_dir():
        raise PeftConversionError(f"{peft_dir}: not a directory (expected a PEFT adapter "
                                  f"directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
    if not config_path.is_file():
        raise PeftConversionError(f"{config_path}: missing; a PEFT LoRA directory holds "
                                  f"{CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeftConversionError(f"{config_path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise PeftConversionError(f"{config_path}: expected a JSON object")
    _check_config(config, config_path)
    return config


def _check_config(config: Mapping[str, Any], path: Path) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise PeftConversionError(f"{path}: peft_type {peft_type} is not supported; only LORA "
                                  f"adapters have a GGUF LoRA form")
    unsupported = {
        "use_dora": "DoRA (use_dora) scales each column by a learned magnitude, which a GGUF "
                    "LoRA cannot express",
        "modules_to_save": "modules_to_save stores full replacement weights, which a GGUF LoRA "
                           "cannot carry",
        "trainable_token_indices": "trainable_token_indices changes embedding rows, which a "
                                   "GGUF LoRA cannot carry",
        "layer_replication": "layer_replication changes the base model's layer stack",
        "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) needs "
                                   "invocation-aware serving that edge does not do",
        "invocation_string": "activated LoRA (invocation_string) needs invocation-aware serving "
                             "that edge does not do",
        "target_parameters": "target_parameters (LoRA on raw parameters such as fused MoE "
                             "experts) has no GGUF LoRA form",
        "lora_bias": "lora_bias adds a bias to B, which a GGUF LoRA cannot carry",
        "fan_in_fan_out": "fan_in_fan_out (Conv1D bases such as GPT-2) is not verified against "
                          "llama.cpp's layout",
    }
    for key, why in unsupported.items():
        if config.get(key):
            raise PeftConversionError(f"{path}: {key} is not supported: {why}")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PeftConversionError(f"{path}: {key} must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict):
            raise PeftConversionError(f"{path}: {key} must be an object")
        for module, value in pattern.items():
            try:
                re.compile(module)
            except re.error as exc:
                raise PeftConversionError(f"{path}: {key} key {module!r} is not a regular "
                                          f"expression: {exc}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise PeftConversionError(f"{path}: {key}[{module!r}] must be a positive "
                                          f"number, got {value!r}")


def read_peft_weights(peft_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    weights = peft_dir / WEIGHTS_FILE
    if weights.is_file():
        return weights, read_safetensors(weights)
    pickled = peft_dir / PICKLE_WEIGHTS_FILE
    if pickled.is_file():
        raise PeftConversionError(
            f"{pickled}: pickled PyTorch weights are not loaded (unpickling runs arbitrary "
            f"code); re-save the adapter as {WEIGHTS_FILE}, e.g. "
            f"model.save_pretrained(dir, safe_serialization=True)")
    raise PeftConversionError(f"{weights}: missing; a PEFT LoRA directory holds {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}")


def read_base(base_gguf: str | os.PathLike[str]) -> _Base:
    """What conversion needs from the base GGUF: architecture, block and head counts, and every
    tensor's name and numpy-order shape, from the header alone (edge's bounded reader; the
    weights are not read)."""
    from edge.backends.catalog import BASE_MAX_ITEMS, BaseModelInfo
    from edge.backends.gguf_header import GGUFFormatError, read_header

    path = Path(base_gguf)
    if not path.is_file():
        raise PeftConversionError(f"{path}: base model not found")
    try:
        header = read_header(path, max_items=BASE_MAX_ITEMS)
    except (GGUFFormatError, OSError) as exc:
        raise PeftConversionError(f"{path}: not a readable GGUF file: {exc}") from exc

    def value(key: str) -> Any:
        entry = header.kv.get(key)
        if entry is None:
            return None
        if entry.is_array:  # per-layer values; the reader keeps no array elements
            return _ARRAY
        return entry.value

    arch = value("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise PeftConversionError(f"{path}: no general.architecture; not a model GGUF")
    if value("general.type") == "adapter":
        raise PeftConversionError(f"{path}: is an adapter GGUF, not a base model")
    n_blocks = value(f"{arch}.block_count")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int):
        raise PeftConversionError(f"{path}: no {arch}.block_count")
    n_head = value(f"{arch}.attention.head_count")
    n_head_kv = value(f"{arch}.attention.head_count_kv")
    tensors = {t.name: t for t in header.tensors}
    info = BaseModelInfo(path=path, architecture=arch, tensors=MappingProxyType(tensors))
    return _Base(path, arch, n_blocks, n_head, n_head if n_head_kv is None else n_head_kv,
                 {name: t.shape for name, t in tensors.items()}, info)


# --- mapping ----------------------------------------------------------------------------------


def _name_map(base: _Base) -> Any:
    import gguf

    archs = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if base.arch not in archs:
        raise PeftConversionError(f"{base.path}: architecture {base.arch!r} is unknown to the "
                                  f"installed gguf package {_gguf_version()}")
    return gguf.get_tensor_name_map(archs[base.arch], base.n_blocks)


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:  # pragma: no cover - gguf imported from a source tree
        return "(version unknown)"


def _map_module(name_map: Any, module: str) -> tuple[Any, str] | None:
    """(MODEL_TENSOR, GGUF tensor name) for a Hugging Face module path, or None."""
    candidates = [module]
    for prefix, replacement in _LANGUAGE_MODEL_PREFIXES:
        if module.startswith(prefix):
            candidates.append(replacement + module[len(prefix):])
            break
    for candidate in candidates:
        found = name_map.get_type_and_name(candidate + ".weight", try_suffixes=(".weight",))
        if found is not None:
            return found
    return None


def _summarise(names: list[str]) -> str:
    """Distinct names with block numbers folded (model.layers.N.mlp.gate), at most a few."""
    folded = sorted({re.sub(r"\.\d+(?=\.|$)", ".N", name) for name in names})
    shown = ", ".join(folded[:_MAX_LISTED])
    return shown + (f" and {len(folded) - _MAX_LISTED} more" if len(folded) > _MAX_LISTED else "")


def _split_tensors(tensors: Mapping[str, np.ndarray], weights: Path
                   ) -> dict[str, dict[str, np.ndarray]]:
    """module -> {"A": array, "B": array}; anything that is not a LoRA A/B matrix is an error
    that names the feature it belongs to."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    others: dict[str, list[str]] = {}
    for full_name, array in tensors.items():
        name = full_name.removeprefix("base_model.model.")
        match = _LORA_TENSOR.match(name)
        if match:
            modules.setdefault(match["module"], {})[match["part"]] = array
            continue
        if "lora_magnitude_vector" in name:
            feature = "DoRA magnitude vectors"
        elif "lora_embedding_" in name:
            feature = "embedding LoRA (lora_embedding_A/B)"
        elif re.search(r"\.lora_[AB]\.bias$", name):
            feature = "LoRA biases"
        elif "modules_to_save" in name or name.endswith((".weight", ".bias")):
            feature = "full weights (modules_to_save, or new token embeddings)"
        else:
            feature = "tensors that are not LoRA A/B matrices"
        others.setdefault(feature, []).append(name)
    if others:
        parts = [f"{feature}: {_summarise(names)}" for feature, names in others.items()]
        raise PeftConversionError(f"{weights}: not supported in a GGUF LoRA: " + "; ".join(parts))
    if not modules:
        raise PeftConversionError(f"{weights}: holds no LoRA tensors (*.lora_A.weight / "
                                  f"*.lora_B.weight)")
    halves = [f"{module} (lora_{'A' if 'B' in parts else 'B'} missing)"
              for module, parts in modules.items() if len(parts) != 2]
    if halves:
        raise PeftConversionError(f"{weights}: incomplete LoRA pairs: {', '.join(sorted(halves))}")
    return modules


def _pattern_value(pattern: Mapping[str, Any], module: str, default: float) -> float:
    """PEFT's rank_pattern / alpha_pattern lookup: the first key that matches the end of the
    module path at a dot boundary (peft.utils.other.get_pattern_key)."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return float(value)
    return default


def _head_count(heads: object) -> int | None:
    return heads if isinstance(heads, int) and not isinstance(heads, bool) else None


def permute_qk_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder B's rows as ``convert_hf_to_gguf.py``'s ``LlamaModel.permute`` reorders a q/k
    weight's: per head, the rows of the two rotary halves are interleaved. For a LoRA it
    touches B only (``convert_lora_to_gguf.py``: ``LoraTorchTensor.permute`` with the last axis
    kept permutes ``_lora_B``; A's rows are the rank, not output features)."""
    n_out, rank = b.shape
    return (b.reshape(n_head, 2, n_out // n_head // 2, rank)
            .swapaxes(1, 2)
            .reshape(n_out, rank))


def plan_peft(peft_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str]
              ) -> PeftConversion:
    """Read a PEFT LoRA directory and the base GGUF's header, check that every tensor has a
    place in the base, and return what would be written. Raises ``PeftConversionError``."""
    import gguf

    peft_dir = Path(peft_dir)
    config = read_peft_config(peft_dir)
    config_path = peft_dir / CONFIG_FILE
    weights, tensors = read_peft_weights(peft_dir)
    base = read_base(base_gguf)
    name_map = _name_map(base)
    modules = _split_tensors(tensors, weights)

    use_rslora = bool(config.get("use_rslora"))
    r_default = float(config["r"])
    alpha_default = float(config["lora_alpha"])
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    # llama.cpp's scale is alpha / rank per tensor; choose the file's alpha so that a module at
    # the config's defaults needs no folding.
    file_alpha = alpha_default * math.sqrt(r_default) if use_rslora else alpha_default

    unmapped: list[str] = []
    not_in_base: list[str] = []
    bad_shapes: list[str] = []
    bad_ranks: list[str] = []
    unknown_qk: list[str] = []
    pairs: list[LoraPair] = []
    for module, parts in modules.items():
        a, b = parts["A"], parts["B"]
        found = _map_module(name_map, module)
        if found is None:
            unmapped.append(module)
            continue
        kind, base_name = found
        if base_name not in base.shapes:
            not_in_base.append(f"{module} -> {base_name}")
            continue
        base_shape = base.shapes[base_name]
        if (a.ndim != 2 or b.ndim != 2 or len(base_shape) != 2 or a.shape[0] != b.shape[1]
                or b.shape[0] != base_shape[0] or a.shape[1] != base_shape[1]):
            bad_shapes.append(f"{module}: A {list(a.shape)}, B {list(b.shape)} vs {base_name} "
                              f"{list(base_shape)} (want A [r, {base_shape[-1]}], "
                              f"B [{base_shape[0]}, r])")
            continue
        rank = int(a.shape[0])
        config_rank = _pattern_value(rank_pattern, module, r_default)
        if rank != config_rank:
            bad_ranks.append(f"{module}: rank {rank}, config r {config_rank:g}")
            continue

        b_out = np.asarray(b, dtype=np.float32) if b.dtype != np.float16 else b
        permuted = False
        if kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            if base.arch in QK_PERMUTED_ARCHS:
                heads = _head_count(
                    base.n_head if kind == gguf.MODEL_TENSOR.ATTN_Q else base.n_head_kv)
                if not heads or b.shape[0] % (2 * heads):
                    bad_shapes.append(f"{module}: {b.shape[0]} output rows do not split into "
                                      f"rotary pairs of {heads or 'unknown (per-layer)'} heads "
                                      f"(base header)")
                    continue
                b_out = permute_qk_rows(b_out, heads)
                permuted = True
            elif base.arch not in QK_UNPERMUTED_ARCHS:
                unknown_qk.append(module)
                continue

        alpha = _pattern_value(alpha_pattern, module, alpha_default)
        peft_scale = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        factor = peft_scale * rank / file_alpha
        if math.isclose(factor, 1.0, rel_tol=1e-9):
            factor = 1.0
        else:
            b_out = (np.asarray(b_out, dtype=np.float32) * np.float32(factor)).astype(b_out.dtype)
        pairs.append(LoraPair(base_name, module, a, b_out, permuted, factor))

    where = f"{weights} (for {base.arch} base {base.path.name})"
    if unmapped:
        raise PeftConversionError(
            f"{where}: {len(unmapped)} LoRA target module(s) have no tensor in the GGUF layout "
            f"of {base.arch} (gguf TensorNameMap): {_summarise(unmapped)}")
    if not_in_base:
        raise PeftConversionError(
            f"{where}: target tensor(s) missing from the base GGUF (tied or dropped "
            f"weights?): {_summarise(not_in_base)}")
    if bad_shapes:
        raise PeftConversionError(
            f"{where}: shape mismatch with the base (wrong base model?): "
            + "; ".join(bad_shapes[:_MAX_LISTED])
            + (f"; and {len(bad_shapes) - _MAX_LISTED} more" if len(bad_shapes) > _MAX_LISTED
               else ""))
    if bad_ranks:
        raise PeftConversionError(
            f"{config_path}: LoRA ranks in {weights.name} contradict r/rank_pattern: "
            + "; ".join(bad_ranks[:_MAX_LISTED]))
    if unknown_qk:
        raise PeftConversionError(
            f"{where}: q/k projection targets on architecture {base.arch!r}, whose q/k row "
            f"layout in GGUF (permuted or not, see llama.cpp's convert_hf_to_gguf.py) edge "
            f"does not know: {_summarise(unknown_qk)}")

    order = {name: i for i, name in enumerate(base.shapes)}
    pairs.sort(key=lambda pair: order[pair.base_name])
    all_f16 = all(p.a.dtype == np.float16 and p.b.dtype == np.float16 for p in pairs)
    base_model = config.get("base_model_name_or_path")
    return PeftConversion(
        source=peft_dir, base=base.path, arch=base.arch, alpha=file_alpha,
        dtype=np.dtype(np.float16 if all_f16 else np.float32), pairs=tuple(pairs),
        base_model_name_or_path=base_model if isinstance(base_model, str) else None,
        base_info=base.info)


# --- writing ----------------------------------------------------------------------------------


def write_lora_gguf(conversion: PeftConversion, path: str | os.PathLike[str],
                    name: str | None = None) -> None:
    """Write ``conversion`` as a GGUF LoRA at ``path`` (plainly; ``convert_peft`` is the atomic
    way)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), conversion.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(conversion.alpha))
    writer.add_name(name or conversion.source.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if conversion.dtype == np.float16
                         else gguf.LlamaFileType.ALL_F32)
    for pair in conversion.pairs:
        writer.add_tensor(f"{pair.base_name}.lora_a",
                          np.ascontiguousarray(pair.a, dtype=conversion.dtype))
        writer.add_tensor(f"{pair.base_name}.lora_b",
                          np.ascontiguousarray(pair.b, dtype=conversion.dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def convert_peft(peft_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str],
                 out_path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Convert a PEFT LoRA directory into a GGUF LoRA for ``base_gguf`` at ``out_path``:
    ``plan_peft`` then ``publish_conversion``. Returns ``out_path``."""
    out_path = Path(out_path)
    if not overwrite and out_path.exists():  # fail before reading anything
        raise PeftConversionError(f"{out_path}: already exists")
    return publish_conversion(plan_peft(peft_dir, base_gguf), out_path, overwrite=overwrite)


def publish_conversion(conversion: PeftConversion, out_path: str | os.PathLike[str], *,
                       overwrite: bool = True, name: str | None = None) -> Path:
    """Write ``conversion`` to ``out_path`` so that a reader sees no file or a whole checked one.

    Written to a temporary file beside ``out_path`` (a hidden ``.tmp`` name that an adapter scan
    does not pick up), fsynced, checked against the base, then renamed into place. With
    ``overwrite=False`` an existing ``out_path`` is an error, also one that appears meanwhile.
    ``name`` is the adapter's general.name (default: the file's stem). Returns ``out_path``."""
    out_path = Path(out_path)
    if not overwrite and out_path.exists():
        raise PeftConversionError(f"{out_path}: already exists")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp",
                                    dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_lora_gguf(conversion, tmp, name=name or out_path.stem)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an adapter is an ordinary file
        _validate(tmp, conversion.base_info)
        _publish(tmp, out_path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(out_path.parent)
    return out_path


def _validate(path: Path, base: Any) -> None:
    """The adapter catalog's check, the one every served adapter passes."""
    from edge.backends.catalog import AdapterError, validate_adapter

    try:
        validate_adapter(path, base)
    except AdapterError as exc:
        raise PeftConversionError(f"the converted adapter fails validation: {exc.reason}"
                                  ) from exc


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails if final exists: no window in which it could be clobbered
    except FileExistsError as exc:
        raise PeftConversionError(f"{final}: already exists") from exc
    except OSError:  # a filesystem without hard links: check, then rename
        if final.exists():
            raise PeftConversionError(f"{final}: already exists") from None
        os.replace(tmp, final)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def summary_lines(conversion: PeftConversion) -> Iterator[str]:
    """Human-readable lines about a conversion (the CLI prints them)."""
    permuted = sum(pair.permuted for pair in conversion.pairs)
    folded = sum(pair.scale_folded != 1.0 for pair in conversion.pairs)
    yield (f"{len(conversion.pairs)} LoRA pairs, rank {'/'.join(map(str, conversion.ranks))}, "
           f"alpha {conversion.alpha:g}, {conversion.dtype.name}, arch {conversion.arch}")
    if permuted:
        yield f"{permuted} q/k pairs with B rows permuted to llama.cpp's rotary layout"
    if folded:
        yield f"{folded} pairs with a per-module scale (alpha_pattern/rsLoRA) folded into B"
    if conversion.base_model_name_or_path:
        yield f"trained on: {conversion.base_model_name_or_path}"
