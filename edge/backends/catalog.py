"""The adapter catalogue: a directory of GGUF LoRA adapters, each checked before llama.cpp sees it.

llama.cpp aborts the process on some malformed adapters (a metadata value of the wrong type, A and
B of different ranks on the token embedding) and reads others into memory before failing, so
every file is checked here first, against the base model it will be attached to: readable GGUF
(``gguf_header`` bounds every count and length by the file size), ``general.type`` "adapter",
``adapter.type`` "lora", the base's architecture, ``<base tensor>.lora_a`` / ``.lora_b`` pairs
whose shapes fit their base tensor, dtypes llama.cpp uses for LoRA, and tensor data inside the
file. A bad file is skipped and recorded with the reason; the good ones make the catalogue.

    base = BaseModelInfo.from_gguf("models/base.gguf")
    catalog = AdapterCatalog("adapters/", base)
    report = catalog.scan()              # ScanReport(added, removed, changed, rejected)
    runtime_catalogue = catalog.catalogue  # edge.catalogue.Catalogue, size = AdapterInfo.nbytes
    path = catalog.resolve("sql")        # the validated file, inside adapters/, unchanged since

An adapter may have a sidecar ``<stem>.yaml`` next to it::

    name: sql                 # catalogue name (default: the file stem)
    description: SQL writer
    tags: [code, sql]
    scale: 0.8                # default user scale (llama.cpp applies scale * alpha / rank)

Names are ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` without ``..``: a request that names an adapter
can only ever select an entry of the catalogue, never build a path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from gguf.constants import GGMLQuantizationType, GGUFValueType

from edge.backends.gguf_header import GGUFFormatError, GGUFHeader, TensorInfo, read_header
from edge.catalogue import Catalogue, CatalogueEntry, UnknownObjectError
from edge.errors import ConfigError, EdgeError

log = logging.getLogger("edge.adapters")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# What convert_lora_to_gguf.py writes (--outtype f32/f16/bf16/q8_0) and llama.cpp multiplies with.
LORA_DTYPES = frozenset({GGMLQuantizationType.F32, GGMLQuantizationType.F16,
                         GGMLQuantizationType.BF16, GGMLQuantizationType.Q8_0})
LORA_SUFFIXES = (".lora_a", ".lora_b")
# llama.cpp skips these in an adapter (norm vectors are not applied), so they are allowed,
# bounds-checked and not counted in nbytes.
IGNORED_SUFFIX = "_norm.weight"

ADAPTER_MAX_ITEMS = 1 << 18  # metadata entries + string array elements + tensors
BASE_MAX_ITEMS = 1 << 24  # a base model carries its tokenizer: hundreds of thousands of strings
SIDECAR_SUFFIX = ".yaml"
SIDECAR_MAX_BYTES = 64 << 10
SIDECAR_KEYS = ("name", "description", "tags", "scale")


class AdapterError(EdgeError, ValueError):
    """An adapter file (or its sidecar) cannot be served; ``reason`` says exactly why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"adapter {str(self.path)!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name an adapter, or None if it can."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    if not NAME_PATTERN.fullmatch(name):
        return (f"{name!r} is not a valid adapter name (1-128 characters from A-Z a-z 0-9 . _ -, "
                "starting with a letter or digit)")
    if ".." in name:
        return f"{name!r} is not a valid adapter name (it contains '..')"
    return None


def is_valid_name(name: object) -> bool:
    return name_problem(name) is None


# --------------------------------------------------------------------------------------------
# The base model


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter is checked against: the base's architecture and every tensor
    (``tensors[name].shape`` in numpy order, ``.dtype`` a ggml type name)."""

    path: Path
    architecture: str
    tensors: Mapping[str, TensorInfo] = field(repr=False)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> BaseModelInfo:
        path = Path(path)
        where = f"base model {str(path)!r}"
        try:
            header = read_header(path, max_items=BASE_MAX_ITEMS)
        except GGUFFormatError as exc:
            raise ConfigError(f"{where}: not a readable GGUF file: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        except Exception as exc:  # the reader means to raise only the two above
            raise ConfigError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
        try:
            arch = _string_kv(header, "general.architecture")
            kind = _string_kv(header, "general.type", required=False)
        except _Reject as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not arch:
            raise ConfigError(f"{where}: general.architecture is empty")
        if kind == "adapter":
            raise ConfigError(f"{where}: general.type is 'adapter': this is an adapter, not a "
                              "base model")
        if not header.tensors:
            raise ConfigError(f"{where}: holds no tensors")
        tensors = {t.name: t for t in header.tensors}
        return cls(path=path, architecture=arch, tensors=MappingProxyType(tensors))


# --------------------------------------------------------------------------------------------
# One adapter file


@dataclass(frozen=True)
class AdapterInfo:
    """A validated LoRA adapter.

    ``ranks`` maps each adapted base tensor to its rank r; ``rank`` is the largest. ``alpha`` is
    ``adapter.lora.alpha`` (None when the file has none: llama.cpp then applies the user scale
    unchanged, otherwise user_scale * alpha / r per tensor). ``tensors`` lists every tensor in the
    file, each one's data inside the file.

    ``nbytes`` is the bytes of the ``.lora_a`` / ``.lora_b`` tensors' data in their stored dtype
    (the sum of ggml_nbytes): what llama.cpp copies into the adapter's backend buffer, since
    ``llama_adapter_lora_init`` duplicates each tensor with its file dtype into a buffer of the
    same kind as the base tensor's (device memory when the base tensor is offloaded). It is the
    size the cache reserves. llama.cpp's real footprint is slightly larger: each tensor is padded
    to the buffer's alignment (32 bytes on CPU, so under 32 bytes per tensor; see
    ``buffer_bytes``), and it keeps about 368 bytes of ggml tensor metadata per tensor outside
    the buffer. While loading it also holds the parsed GGUF metadata and a read buffer as large
    as the largest tensor, freed when the load returns. Tensors llama.cpp skips
    (``*_norm.weight``) are not counted.
    """

    path: Path
    architecture: str
    alpha: float | None
    ranks: Mapping[str, int] = field(repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    nbytes: int = 0
    file_size: int = 0

    @property
    def rank(self) -> int:
        return max(self.ranks.values())

    def buffer_bytes(self, alignment: int = 32) -> int:
        """Bytes of llama.cpp's adapter buffer for a backend with this tensor alignment."""
        return sum(-(-t.nbytes // alignment) * alignment for t in self._lora_tensors())

    def _lora_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.name.endswith(LORA_SUFFIXES)]


class _Reject(Exception):
    """A validation failure; the caller adds the path."""


def validate_adapter(path: str | os.PathLike[str], base: BaseModelInfo) -> AdapterInfo:
    """Check that ``path`` is a LoRA adapter llama.cpp can load onto ``base``; raises
    ``AdapterError`` naming the path and the reason, never any other exception."""
    path = Path(path)
    try:
        header = read_header(path, max_items=ADAPTER_MAX_ITEMS)
    except GGUFFormatError as exc:
        raise AdapterError(path, f"not a readable GGUF file: {exc}") from None
    except OSError as exc:
        raise AdapterError(path, f"cannot read it: {exc.strerror or exc}") from None
    except Exception as exc:  # the reader means to raise only the two above
        raise AdapterError(path, f"unreadable GGUF ({type(exc).__name__}: {exc})") from None
    try:
        return _check_adapter(path, header, base)
    except _Reject as exc:
        raise AdapterError(path, str(exc)) from None
    except Exception as exc:  # a bug here must still not let a file through
        raise AdapterError(path, f"validation failed ({type(exc).__name__}: {exc})") from None


def _string_kv(header: GGUFHeader, key: str, required: bool = True) -> str | None:
    entry = header.kv.get(key)
    if entry is None:
        if required:
            raise _Reject(f"metadata {key} is missing")
        return None
    # llama.cpp reads these with gguf_get_val_str, which aborts on any other type.
    if entry.is_array or entry.type is not GGUFValueType.STRING:
        raise _Reject(f"metadata {key} must be a string, not {entry.describe()}")
    if entry.value is None:
        raise _Reject(f"metadata {key} is a {entry.count}-byte string")
    return entry.value


def _check_adapter(path: Path, header: GGUFHeader, base: BaseModelInfo) -> AdapterInfo:
    kind = _string_kv(header, "general.type", required=False)
    if kind != "adapter":
        found = "missing" if kind is None else f"{kind!r}"
        raise _Reject(f"general.type is {found}, expected 'adapter' (is this a base model?)")
    adapter_type = _string_kv(header, "adapter.type")
    if adapter_type != "lora":
        raise _Reject(f"adapter.type is {adapter_type!r}, expected 'lora'")
    arch = _string_kv(header, "general.architecture")
    if arch != base.architecture:
        raise _Reject(f"architecture {arch!r} does not match the base model's "
                      f"{base.architecture!r} ({base.path.name})")
    alpha = _alpha(header)
    tokens = header.kv.get("adapter.alora.invocation_tokens")
    if tokens is not None and not (tokens.is_array and tokens.type is GGUFValueType.UINT32):
        raise _Reject("metadata adapter.alora.invocation_tokens must be an array of UINT32, "
                      f"not {tokens.describe()}")

    pairs: dict[str, dict[str, TensorInfo]] = {}
    for tensor in header.tensors:
        if tensor.nbytes is None:
            raise _Reject(f"tensor {tensor.name!r} has unknown ggml type {tensor.type_id}")
        if tensor.name.endswith(LORA_SUFFIXES):
            target, part = tensor.name[:-7], tensor.name[-1]
            if any(s in target for s in LORA_SUFFIXES):
                raise _Reject(f"tensor name {tensor.name!r} repeats a .lora_a/.lora_b suffix")
            if tensor.type_id not in LORA_DTYPES:
                allowed = ", ".join(sorted(t.name for t in LORA_DTYPES))
                raise _Reject(f"tensor {tensor.name!r} has dtype {tensor.dtype}; LoRA tensors "
                              f"must be one of {allowed}")
            pairs.setdefault(target, {})[part] = tensor
        elif not tensor.name.endswith(IGNORED_SUFFIX):
            raise _Reject(f"tensor {tensor.name!r} is not named <base tensor>.lora_a or "
                          "<base tensor>.lora_b")
    if not pairs:
        raise _Reject("holds no LoRA tensors (<base tensor>.lora_a / .lora_b)")

    ranks: dict[str, int] = {}
    nbytes = 0
    for target in sorted(pairs):
        pair = pairs[target]
        for part, other in (("a", "b"), ("b", "a")):
            if part not in pair:
                raise _Reject(f"{target}.lora_{part} is missing: {target}.lora_{other} has no "
                              "partner (LoRA tensors come in .lora_a/.lora_b pairs)")
        base_tensor = base.tensors.get(target)
        if base_tensor is None:
            raise _Reject(f"targets {target!r}, which the base model ({base.path.name}) does "
                          "not have")
        ranks[target] = _lora_rank(target, base_tensor.shape, pair["a"].shape, pair["b"].shape)
        nbytes += pair["a"].nbytes + pair["b"].nbytes
    if nbytes <= 0:
        raise _Reject("its LoRA tensors hold no data")
    return AdapterInfo(path=path, architecture=arch, alpha=alpha,
                       ranks=MappingProxyType(ranks), tensors=header.tensors, nbytes=nbytes,
                       file_size=header.file_size)


def _alpha(header: GGUFHeader) -> float | None:
    entry = header.kv.get("adapter.lora.alpha")
    if entry is None:
        return None
    # llama.cpp reads it with gguf_get_val_f32, which aborts on any other type.
    if entry.is_array or entry.type is not GGUFValueType.FLOAT32:
        raise _Reject(f"metadata adapter.lora.alpha must be a FLOAT32, not {entry.describe()}")
    if not math.isfinite(entry.value):
        raise _Reject(f"adapter.lora.alpha is {entry.value}, not a finite number")
    return float(entry.value)


def _lora_rank(target: str, base: tuple[int, ...], a: tuple[int, ...],
               b: tuple[int, ...]) -> int:
    """The rank of a LoRA pair over a base tensor, all shapes in numpy order; rejects shapes
    llama.cpp would refuse or (for the token embedding, which it checks less) crash on."""
    def wrong(expected_a: str, expected_b: str) -> _Reject:
        return _Reject(f"LoRA shapes for {target} {base} do not fit: lora_a is {a}, expected "
                       f"{expected_a}; lora_b is {b}, expected {expected_b}")

    if target.endswith("token_embd.weight"):
        # llama.cpp's get_rows path: A is (n_vocab, r), B is (n_embd, r); see llm_build_inp_embd.
        if len(base) != 2:
            raise _Reject(f"base tensor {target} has shape {base}, expected (n_vocab, n_embd)")
        n_vocab, n_embd = base
        if len(a) != 2 or len(b) != 2 or a[0] != n_vocab or b[0] != n_embd or a[1] != b[1]:
            raise wrong(_dims(n_vocab, "r"), _dims(n_embd, "r"))
        rank = a[1]
    else:
        if len(base) not in (2, 3):
            raise _Reject(f"base tensor {target} has shape {base}; LoRA applies to matrices "
                          "(n_out, n_in) and expert stacks (n_expert, n_out, n_in)")
        lead, (n_out, n_in) = base[:-2], base[-2:]
        if (len(a) != len(base) or len(b) != len(base) or a[:-2] != lead or b[:-2] != lead
                or a[-1] != n_in or b[-2] != n_out or a[-2] != b[-1]):
            raise wrong(_dims(*lead, "r", n_in), _dims(*lead, n_out, "r"))
        rank = a[-2]
    if rank < 1:
        raise _Reject(f"LoRA pair for {target} has rank {rank}")
    return rank


def _dims(*dims: object) -> str:
    return f"({', '.join(map(str, dims))})"


# --------------------------------------------------------------------------------------------
# Sidecars


@dataclass(frozen=True)
class AdapterSidecar:
    """What ``<stem>.yaml`` says about an adapter (the defaults when there is none)."""

    name: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    scale: float = 1.0


def load_sidecar(path: str | os.PathLike[str]) -> AdapterSidecar:
    """Read and check a sidecar; raises ``AdapterError`` naming ``path`` and the reason."""
    path = Path(path)
    try:
        text = _read_small_file(path, SIDECAR_MAX_BYTES)
        data = yaml.safe_load(text)
    except _Reject as exc:
        raise AdapterError(path, str(exc)) from None
    except OSError as exc:
        raise AdapterError(path, f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AdapterError(path, "is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise AdapterError(path, f"is not valid YAML: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # a bad timestamp (ValueError), deep nesting (RecursionError), ...
        raise AdapterError(path, f"is not valid YAML ({type(exc).__name__}: {exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AdapterError(path, f"must be a mapping of {', '.join(SIDECAR_KEYS)}, not "
                                 f"{type(data).__name__}")
    unknown = [k for k in data if k not in SIDECAR_KEYS]
    if unknown:
        raise AdapterError(path, f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: "
                                 f"{', '.join(SIDECAR_KEYS)})")
    fields: dict[str, Any] = {}
    if "name" in data:
        problem = name_problem(data["name"])
        if problem:
            raise AdapterError(path, f"name: {problem}")
        fields["name"] = data["name"]
    if "description" in data:
        if not isinstance(data["description"], str):
            raise AdapterError(path, "description must be a string, not "
                                     f"{type(data['description']).__name__}")
        fields["description"] = data["description"]
    if "tags" in data:
        tags = data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise AdapterError(path, f"tags must be a list of strings, got {tags!r}")
        fields["tags"] = tuple(tags)
    if "scale" in data:
        scale = data["scale"]
        try:
            finite = (not isinstance(scale, bool) and isinstance(scale, (int, float))
                      and math.isfinite(scale))
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise AdapterError(path, f"scale must be a finite number, got {scale!r:.40}")
        fields["scale"] = float(scale)
    return AdapterSidecar(**fields)


def _read_small_file(path: Path, limit: int) -> str:
    # O_NONBLOCK: a FIFO named like a sidecar must not block the scan.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Reject("is not a regular file")
        if info.st_size > limit:
            raise _Reject(f"is {info.st_size} bytes, more than the {limit} a sidecar may be")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _Reject(f"is more than the {limit} bytes a sidecar may be")
    return data.decode("utf-8")


# --------------------------------------------------------------------------------------------
# The catalogue of a directory

Signature = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


@dataclass(frozen=True)
class CatalogAdapter:
    """One adapter in the catalogue: its name, the validated file (resolved, inside the
    directory), what validation found and what its sidecar says."""

    name: str
    path: Path
    info: AdapterInfo
    sidecar: AdapterSidecar
    signature: Signature = field(compare=False)
    sidecar_signature: Signature | None = field(compare=False, default=None)

    def entry(self) -> CatalogueEntry:
        return CatalogueEntry(self.name, self.info.nbytes, str(self.path), metadata={
            "scale": self.sidecar.scale,
            "description": self.sidecar.description,
            "tags": list(self.sidecar.tags),
            "rank": self.info.rank,
            "alpha": self.info.alpha,
        })


@dataclass(frozen=True)
class ScanReport:
    """A scan compared with the one before: adapter names added, removed and changed (file or
    sidecar replaced or edited, re-validated), and every file rejected now (path -> reason)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    rejected: Mapping[Path, str] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the catalogue differs from the one before."""
        return bool(self.added or self.removed or self.changed)


MISSING: Signature = (0, 0, -1, 0)  # a path that cannot be stat'ed (dangling link, no access)


def _signature(path: Path) -> Signature:
    st = os.stat(path)  # follows a symlink: the file that would be read
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _signature_or_missing(path: Path) -> Signature:
    try:
        return _signature(path)
    except (OSError, ValueError):
        return MISSING


class AdapterCatalog:
    """The adapters in ``directory`` matching ``pattern``, validated against ``base``.

    Nothing is read until ``scan()``; call it again (on a signal, an API call, or through
    ``scan_if_due``) to pick up added, removed and replaced files. A file whose stat signature
    (device, inode, size, mtime) and sidecar are unchanged is not re-read. ``catalogue``,
    ``adapters`` and ``resolve`` may be used from other threads while a scan runs: they see the
    previous scan's result until the new one is complete.
    """

    def __init__(self, directory: str | os.PathLike[str], base: BaseModelInfo | str
                 | os.PathLike[str], pattern: str = "*.gguf") -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"adapter directory {str(self.directory)!r} does not exist or is "
                              "not a directory")
        if not pattern or "/" in pattern or os.sep in pattern or ".." in pattern:
            raise ConfigError(f"adapter pattern {pattern!r} must match file names in the "
                              "directory itself (no '/' or '..')")
        self.pattern = pattern
        self.base = base if isinstance(base, BaseModelInfo) else BaseModelInfo.from_gguf(base)
        self._root = self.directory.resolve()
        self._lock = threading.Lock()
        # Per listed path: the signatures it was checked at and the result (a record without
        # its final name, or the reason it was rejected). Names are assigned per scan.
        self._checked: dict[Path, tuple[tuple[Signature, Signature | None],
                                        CatalogAdapter | str]] = {}
        self._adapters: Mapping[str, CatalogAdapter] = MappingProxyType({})
        self._rejected: Mapping[Path, str] = MappingProxyType({})
        self._catalogue = Catalogue()
        self._last_scan_at: float | None = None
        self.last_report: ScanReport | None = None

    @property
    def catalogue(self) -> Catalogue:
        """The runtime's view: ``CatalogueEntry(name, size=nbytes, location=path, metadata)``."""
        return self._catalogue

    @property
    def adapters(self) -> Mapping[str, CatalogAdapter]:
        return self._adapters

    @property
    def rejected(self) -> Mapping[Path, str]:
        """Every file the last scan skipped: path -> reason."""
        return self._rejected

    def __len__(self) -> int:
        return len(self._adapters)

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def resolve(self, name: str) -> Path:
        """The file behind ``name``: always inside the directory, and the very file that was
        validated. A backend should call this right before loading: it raises
        ``UnknownObjectError`` for a name not in the catalogue (an invalid name never is) and
        ``AdapterError`` when the file now resolves outside the directory, is gone, or changed
        since the scan that validated it (rescan first)."""
        problem = name_problem(name)
        if problem:
            raise UnknownObjectError(f"no such adapter: {problem}")
        record = self._adapters.get(name)
        if record is None:
            known = ", ".join(list(self._adapters)[:10])
            raise UnknownObjectError(f"{name!r} is not in the adapter catalogue (it holds: "
                                     f"{known or 'nothing'})")
        try:
            real = record.path.resolve(strict=True)
            signature = _signature(real)
        except (OSError, RuntimeError) as exc:
            raise AdapterError(record.path, f"is gone since the last scan ({exc})") from None
        if not real.is_relative_to(self._root):
            raise AdapterError(record.path, f"now resolves to {str(real)!r}, outside the adapter "
                                            f"directory {str(self._root)!r}")
        if signature != record.signature:
            raise AdapterError(record.path, "changed since it was validated; rescan before "
                                            "loading it")
        return real

    def scan_if_due(self, now: float, interval: float) -> ScanReport | None:
        """Scan when ``interval`` seconds (of the caller's clock, e.g. time.monotonic()) have
        passed since the last scan made through here, or none was; else None."""
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
            raise ConfigError(f"rescan interval must be a positive number of seconds, got "
                              f"{interval!r}")
        if self._last_scan_at is not None and now - self._last_scan_at < interval:
            return None
        report = self.scan()
        self._last_scan_at = now
        return report

    def scan(self) -> ScanReport:
        """Validate every matching file (re-reading only new or changed ones), rebuild the
        catalogue, log each new rejection, and report what changed since the last scan."""
        with self._lock:
            if not self.directory.is_dir():
                raise ConfigError(f"adapter directory {str(self.directory)!r} is gone; keeping "
                                  "the catalogue of the last scan")
            try:
                listing = sorted(p for p in self.directory.glob(self.pattern))
            except OSError as exc:
                raise ConfigError(f"cannot list adapter directory {str(self.directory)!r}: "
                                  f"{exc.strerror or exc}") from None
            checked: dict[Path, tuple[tuple[Signature, Signature | None],
                                      CatalogAdapter | str]] = {}
            revalidated: set[Path] = set()
            for path in listing:
                if not path.is_dir():
                    checked[path] = self._check(path, revalidated)
            self._checked = checked
            adapters, rejected = self._assign_names(checked)
            report = self._report(adapters, rejected)
            for path, reason in rejected.items():
                if path in revalidated or self._rejected.get(path) != reason:
                    log.warning("adapter %s rejected: %s", path, reason)
            self._adapters = MappingProxyType(adapters)
            self._rejected = MappingProxyType(rejected)
            self._catalogue = Catalogue([adapters[n].entry() for n in sorted(adapters)])
            self.last_report = report
            if report.modified:
                log.info("adapter catalogue: %d adapters (%d added, %d removed, %d changed), "
                         "%d rejected", len(adapters), len(report.added), len(report.removed),
                         len(report.changed), len(rejected))
            return report

    def _check(self, path: Path, revalidated: set[Path]
               ) -> tuple[tuple[Signature, Signature | None], CatalogAdapter | str]:
        sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
        signatures = (_signature_or_missing(path),
                      None if not os.path.lexists(sidecar) else _signature_or_missing(sidecar))
        previous = self._checked.get(path)
        if previous is not None and previous[0] == signatures:
            return previous
        revalidated.add(path)
        try:
            result = self._validate(path, signatures[0], sidecar, signatures[1])
        except Exception as exc:  # a race with the file system (file gone mid-check), say
            result = f"cannot check it ({type(exc).__name__}: {exc})"
        return signatures, result

    def _validate(self, path: Path, signature: Signature, sidecar: Path,
                  sidecar_signature: Signature | None) -> CatalogAdapter | str:
        if signature == MISSING:
            return ("is a dangling symlink" if path.is_symlink() else "cannot be read "
                    "(it vanished or its permissions forbid it)")
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "is not a regular file"
        problem = name_problem(path.stem)
        if problem:
            return f"file name: {problem}"
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            return f"cannot resolve it: {exc}"
        if not real.is_relative_to(self._root):
            return (f"resolves to {str(real)!r}, outside the adapter directory "
                    f"{str(self._root)!r}")
        notes = AdapterSidecar()
        if sidecar_signature is not None:
            try:
                real_sidecar = sidecar.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                return f"sidecar {sidecar.name}: cannot resolve it: {exc}"
            if not real_sidecar.is_relative_to(self._root):
                return (f"sidecar {sidecar.name} resolves to {str(real_sidecar)!r}, outside the "
                        "adapter directory")
            try:
                notes = load_sidecar(real_sidecar)
            except AdapterError as exc:
                return f"sidecar {sidecar.name}: {exc.reason}"
        try:
            info = validate_adapter(real, self.base)
        except AdapterError as exc:
            return exc.reason
        return CatalogAdapter(name=notes.name or path.stem, path=real, info=info, sidecar=notes,
                              signature=signature, sidecar_signature=sidecar_signature)

    def _assign_names(self, checked: dict) -> tuple[dict[str, CatalogAdapter], dict[Path, str]]:
        """A name goes to the file that held it in the last scan, else to the first file in
        path order; any other file claiming it is rejected."""
        adapters: dict[str, CatalogAdapter] = {}
        owner: dict[str, Path] = {}
        rejected: dict[Path, str] = {}
        previous_owner = {name: record.path for name, record in self._adapters.items()}
        candidates = [(path, result) for path, (_, result) in checked.items()]
        # Holders of a name from the last scan first, then the rest in path order.
        candidates.sort(key=lambda item: (
            not (isinstance(item[1], CatalogAdapter)
                 and previous_owner.get(item[1].name) == item[1].path), item[0]))
        for path, result in candidates:
            if isinstance(result, str):
                rejected[path] = result
            elif result.name in adapters:
                rejected[path] = (f"duplicate adapter name {result.name!r}: "
                                  f"{str(owner[result.name])!r} already has it")
            else:
                adapters[result.name] = result
                owner[result.name] = path
        return adapters, dict(sorted(rejected.items()))

    def _report(self, adapters: Mapping[str, CatalogAdapter],
                rejected: Mapping[Path, str]) -> ScanReport:
        old = self._adapters
        changed = [n for n in adapters if n in old and (
            old[n].path != adapters[n].path or old[n].signature != adapters[n].signature
            or old[n].sidecar_signature != adapters[n].sidecar_signature)]
        return ScanReport(added=tuple(sorted(set(adapters) - set(old))),
                          removed=tuple(sorted(set(old) - set(adapters))),
                          changed=tuple(sorted(changed)),
                          rejected=MappingProxyType(dict(rejected)))

    def __repr__(self) -> str:
        return (f"AdapterCatalog({str(self.directory)!r}, {len(self._adapters)} adapters, "
                f"{len(self._rejected)} rejected)")
