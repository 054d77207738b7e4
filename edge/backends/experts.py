"""``ExpertStore``: one MoE GGUF's experts, each readable on its own by positional reads.

A Mixtral-style GGUF stacks a layer's experts in one tensor per projection
(``blk.N.ffn_{gate,up,down}_exps.weight``, numpy shape (n_expert, rows, cols)), so expert e of
a tensor is one contiguous slice: bytes [data_offset + e * n_bytes / n_expert, + n_bytes /
n_expert) of the file (FIELD-NOTES "MoE in GGUF"). The layout comes from the bounded header
reader (``edge.backends.gguf_header``); loading an expert then reads only its three slices with
``os.pread`` on one descriptor (thread-safe: a pread has no shared file position), so the file
is never mapped and only the experts in use occupy memory. Dequantisation is gguf's own
(``gguf.quants.dequantize``; Q8_0 is blocks of one f16 scale and 32 int8) to float32, at load
time, for F32, F16, BF16 and Q8_0; any other storage type is refused by name.

``ExpertStore(path, page_cache=False)`` keeps the experts out of the OS page cache: the file is
read without readahead (``POSIX_FADV_RANDOM``) and each expert's pages are dropped once read
(``POSIX_FADV_DONTNEED``), so the budget is all the RAM experts occupy and every load is a read
from the device: the regime of a model that does not fit in RAM, where the OS could not keep
the file cached either (a small test model would otherwise be served from the page cache, and
readahead would cache a read expert's neighbours outside the budget). Every read of the file,
header and dense tensors (``read_tensor``) included, goes through that one descriptor, advised
before the first, so each read is done when it returns and none leaves pages in flight for the
advice to miss. Linux only (``posix_fadvise``); the file's dirty pages are flushed first, as
only clean pages can be dropped.

Keys for ``PagedCache`` are integers, ``layer << 32 | expert``, so a layer's batch of experts
takes the C core's batch hit path; ``nbytes(layer, expert)`` is what a loaded expert holds in
memory (the cache's budget unit) and ``file_nbytes`` what loading it reads.

    store = ExpertStore("moe.gguf")
    cache = PagedCache(budget, "lru", loader=store.load_key, sizer=store.size_of_key)
    with cache.acquire_many([expert_key(0, e) for e in (3, 7)]) as experts: ...
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from edge.backends.gguf_header import GGUFFormatError, GGUFHeader, TensorInfo, read_header
from edge.errors import EdgeError

# Storage types an expert may have; the dequantiser for each is gguf.quants.dequantize.
SUPPORTED_TYPES = frozenset({
    gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.Q8_0,
})
# Dense tensors (read once, kept as float32) may be of any type gguf dequantises.
DENSE_TYPES = frozenset(gguf.GGMLQuantizationType)
PROJECTIONS = ("gate", "up", "down")  # blk.N.ffn_<projection>_exps.weight
KEY_SHIFT = 32
EXPERT_MASK = (1 << KEY_SHIFT) - 1
# Header items read_header may read: a real model's tokenizer arrays run to a few 100k strings.
HEADER_ITEMS = 1 << 24


class MoeFormatError(EdgeError, ValueError):
    """A file is not a MoE GGUF this store can page (missing keys or tensors, bad shapes)."""


class UnsupportedExpertType(MoeFormatError):
    """An expert tensor's storage type has no dequantiser here; the message names both."""


def expert_key(layer: int, expert: int) -> int:
    """The cache key of one expert of one layer: ``layer << 32 | expert``."""
    return (layer << KEY_SHIFT) | expert


def split_key(key: int) -> tuple[int, int]:
    """(layer, expert) of a key made by ``expert_key``."""
    return key >> KEY_SHIFT, key & EXPERT_MASK


@dataclass(frozen=True)
class ExpertSlice:
    """One expert's part of one stacked tensor: where its bytes are and what they hold."""

    tensor: str
    offset: int  # absolute file offset
    nbytes: int
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, int]  # numpy (rows, cols) of the dequantised matrix


@dataclass(frozen=True)
class ExpertWeights:
    """One expert's SwiGLU FFN, float32: out = down @ (silu(gate @ x) * (up @ x)).

    gate and up are (n_ff, n_embd), down (n_embd, n_ff); the arrays are read-only because a
    cached expert is shared by every caller that acquires it."""

    gate: np.ndarray
    up: np.ndarray
    down: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.gate.nbytes + self.up.nbytes + self.down.nbytes


@dataclass(frozen=True)
class MoeLayout:
    """What the store read from the file's metadata and tensor table."""

    arch: str
    n_layer: int
    n_expert: int
    n_expert_used: int
    n_embd: int
    n_ff: int
    moe_layers: tuple[int, ...]  # blocks with a router (all of them in a Mixtral-style model)
    metadata: dict  # the <arch>.* scalar keys, for gating rules (expert_weights_norm, ...)


def _required_int(scalar, key: str, path: Path) -> int:
    value = scalar(key)
    if value is None:
        raise MoeFormatError(f"{path}: not a MoE GGUF: metadata key {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MoeFormatError(f"{path}: metadata {key} = {value!r}; expected a positive integer")
    return value


class ExpertStore:
    """The experts of one MoE GGUF, loadable one (layer, expert) at a time; see the module
    docstring. ``bytes_read`` and ``loads`` count expert loads (routers are not counted;
    thread-safe)."""

    def __init__(self, path: str | os.PathLike[str], *, page_cache: bool = True) -> None:
        self.path = Path(path)
        if not page_cache and not hasattr(os, "posix_fadvise"):
            raise EdgeError(f"{self.path}: page_cache=False needs posix_fadvise, which this "
                            "platform lacks (Linux has it)")
        self.page_cache = page_cache
        self._fd: int | None = os.open(self.path, os.O_RDONLY)
        try:
            if not page_cache:
                # Advised before the first read: every read is then exactly what was asked and
                # done when it returns, so no readahead is left in flight to outlive a drop.
                os.fsync(self._fd)  # only clean pages can be dropped
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
            try:
                header = read_header(self.path, fd=self._fd, max_items=HEADER_ITEMS)
            except GGUFFormatError as exc:
                raise MoeFormatError(f"{self.path}: not a readable GGUF file: {exc}") from None
            self.layout, self._slices, self._routers, self._tensors = self._read_layout(header)
            self.drop_page_cache()
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._bytes_read = 0
        self._loads = 0
        self._resident_nbytes = 4 * 3 * self.layout.n_ff * self.layout.n_embd  # float32

    # ---- layout ------------------------------------------------------------------------------

    def _read_layout(self, header: GGUFHeader):
        path = self.path
        kv = header.kv

        def scalar(key: str) -> object | None:
            entry = kv.get(key)
            return None if entry is None or entry.is_array else entry.value

        arch = scalar("general.architecture")
        if not isinstance(arch, str):
            raise MoeFormatError(f"{path}: not a model GGUF: general.architecture is missing")
        n_layer = _required_int(scalar, f"{arch}.block_count", path)
        n_expert = _required_int(scalar, f"{arch}.expert_count", path)
        n_used = _required_int(scalar, f"{arch}.expert_used_count", path)
        n_embd = _required_int(scalar, f"{arch}.embedding_length", path)
        if n_used > n_expert:
            raise MoeFormatError(f"{path}: {arch}.expert_used_count ({n_used}) exceeds "
                                 f"{arch}.expert_count ({n_expert})")
        tensors = {t.name: t for t in header.tensors}
        moe_layers = tuple(i for i in range(n_layer) if f"blk.{i}.ffn_gate_inp.weight" in tensors)
        if not moe_layers:
            raise MoeFormatError(f"{path}: not a MoE GGUF: no router tensor "
                                 f"blk.N.ffn_gate_inp.weight in any of its {n_layer} blocks")
        missing = [f"blk.{i}.ffn_{p}_exps.weight" for i in moe_layers for p in PROJECTIONS
                   if f"blk.{i}.ffn_{p}_exps.weight" not in tensors]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more"
                                              if len(missing) > 4 else "")
            raise MoeFormatError(f"{path}: not a MoE GGUF this store can page: missing the "
                                 f"stacked expert tensors {shown}")
        n_ff = tensors[f"blk.{moe_layers[0]}.ffn_up_exps.weight"].ne[1]
        expected = {"gate": (n_embd, n_ff, n_expert), "up": (n_embd, n_ff, n_expert),
                    "down": (n_ff, n_embd, n_expert)}  # ggml order: fastest dimension first
        slices: dict[tuple[int, int], tuple[ExpertSlice, ...]] = {}
        routers: dict[int, ExpertSlice] = {}
        for i in moe_layers:
            router = tensors[f"blk.{i}.ffn_gate_inp.weight"]
            if router.ne != (n_embd, n_expert):
                raise MoeFormatError(f"{path}: {router.name} has shape {router.ne} (ggml "
                                     f"order); expected ({n_embd}, {n_expert})")
            routers[i] = _whole(router, path)
            per_layer = []
            for projection in PROJECTIONS:
                t = tensors[f"blk.{i}.ffn_{projection}_exps.weight"]
                dims = t.ne
                if dims != expected[projection]:
                    raise MoeFormatError(f"{path}: {t.name} has shape {dims} (ggml order); "
                                         f"expected {expected[projection]}")
                qtype = _checked_type(t, path)
                per_layer.append((t, qtype, t.nbytes // n_expert, (dims[1], dims[0])))
            for e in range(n_expert):
                slices[(i, e)] = tuple(
                    ExpertSlice(t.name, t.offset + e * size, size, qtype, shape)
                    for t, qtype, size, shape in per_layer)
        metadata = {}
        for key, entry in kv.items():
            if key.startswith(f"{arch}.") and not entry.is_array \
                    and isinstance(entry.value, (bool, int, float, str)):
                metadata[key[len(arch) + 1:]] = entry.value
        n_ff_meta = metadata.get("expert_feed_forward_length", metadata.get(
            "feed_forward_length", n_ff))
        if n_ff_meta != n_ff:
            raise MoeFormatError(f"{path}: experts are {n_ff} wide but the metadata says "
                                 f"{n_ff_meta}")
        layout = MoeLayout(arch, n_layer, n_expert, n_used, n_embd, n_ff, moe_layers, metadata)
        return layout, slices, routers, tensors

    @property
    def n_layer(self) -> int:
        return self.layout.n_layer

    @property
    def n_expert(self) -> int:
        return self.layout.n_expert

    @property
    def n_expert_used(self) -> int:
        return self.layout.n_expert_used

    def slices(self, layer: int, expert: int) -> tuple[ExpertSlice, ExpertSlice, ExpertSlice]:
        """Where expert ``expert`` of block ``layer`` lies: its gate, up and down slices."""
        try:
            return self._slices[(layer, expert)]
        except (KeyError, TypeError):
            raise KeyError(self._unknown(layer, expert)) from None

    def _unknown(self, layer: object, expert: object) -> str:
        return (f"{self.path}: no expert {expert!r} in layer {layer!r} (MoE layers "
                f"{self.layout.moe_layers[0]}..{self.layout.moe_layers[-1]}, experts "
                f"0..{self.n_expert - 1})")

    def nbytes(self, layer: int, expert: int) -> int:
        """Bytes a loaded expert holds in memory (float32 gate, up and down): its cache size."""
        self.slices(layer, expert)
        return self._resident_nbytes

    def file_nbytes(self, layer: int, expert: int) -> int:
        """Bytes ``load`` reads from the file for this expert (its stored size)."""
        return sum(s.nbytes for s in self.slices(layer, expert))

    # ---- reads -------------------------------------------------------------------------------

    def load(self, layer: int, expert: int) -> ExpertWeights:
        """Read and dequantise one expert: three positional reads, nothing else of the file."""
        pieces = self.slices(layer, expert)
        gate, up, down = (self._read_matrix(s) for s in pieces)
        with self._lock:
            self._loads += 1
            self._bytes_read += sum(s.nbytes for s in pieces)
        return ExpertWeights(gate, up, down)

    def router(self, layer: int) -> np.ndarray:
        """Block ``layer``'s router, float32 (n_expert, n_embd): logits = router @ x."""
        try:
            piece = self._routers[layer]
        except (KeyError, TypeError):
            raise KeyError(f"{self.path}: layer {layer!r} has no router (MoE layers: "
                           f"{list(self.layout.moe_layers)})") from None
        return self._read_matrix(piece)

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def read_tensor(self, name: str) -> np.ndarray:
        """Any tensor of the file (the dense weights), dequantised to float32 in numpy shape,
        read through the store's descriptor (past the page cache with ``page_cache=False``)."""
        tensor = self._tensors.get(name)
        if tensor is None:
            raise MoeFormatError(f"{self.path}: tensor {name} is missing")
        piece = _whole(tensor, self.path, DENSE_TYPES)
        try:
            return self._read_matrix(piece).reshape(tensor.shape)
        except NotImplementedError:
            raise UnsupportedExpertType(f"{self.path}: {name} is stored as {tensor.dtype}, "
                                        "which gguf cannot dequantise") from None

    def load_key(self, key: Hashable) -> tuple[ExpertWeights, int]:
        """``PagedCache`` loader for keys made by ``expert_key``."""
        layer, expert = self._split(key)
        weights = self.load(layer, expert)
        return weights, weights.nbytes

    def size_of_key(self, key: Hashable) -> int:
        """``PagedCache`` sizer for keys made by ``expert_key``."""
        return self.nbytes(*self._split(key))

    def _split(self, key: Hashable) -> tuple[int, int]:
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise KeyError(f"{self.path}: expert keys are ints layer << 32 | expert, "
                           f"got {key!r}")
        return split_key(key)

    def _read_matrix(self, piece: ExpertSlice) -> np.ndarray:
        raw = self._pread(piece.offset, piece.nbytes, piece.tensor)
        if not self.page_cache:
            self._drop_pages(piece.offset, piece.nbytes)
        rows = piece.shape[0]
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows, piece.nbytes // rows)
        matrix = gguf.quants.dequantize(blocks, piece.qtype)
        # F32 comes back as a view of the read buffer; everything else is already a new array.
        matrix = np.ascontiguousarray(matrix, dtype=np.float32).reshape(piece.shape)
        matrix.flags.writeable = False
        return matrix

    def _pread(self, offset: int, nbytes: int, what: str) -> bytearray:
        fd = self._fd
        if fd is None:
            raise EdgeError(f"{self.path}: the expert store is closed")
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        done = 0
        while done < nbytes:  # a pread may return less than asked; EOF returns 0
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise MoeFormatError(f"{self.path}: truncated: {what} needs bytes "
                                     f"{offset}..{offset + nbytes}, the file ends first")
            done += n
        return buffer

    def readahead(self, layer: int, expert: int) -> int:
        """Have the kernel read this expert's bytes into the OS page cache in the background
        (``POSIX_FADV_WILLNEED``), so a later ``load`` copies them from memory: a prefetch with
        no thread of ours. Returns the bytes advised (0 where posix_fadvise is missing). With
        ``page_cache=False`` the load drops them again, or ``forget`` does if none comes."""
        fd = self._fd
        if fd is None or not hasattr(os, "posix_fadvise"):
            return 0
        pieces = self.slices(layer, expert)
        for piece in pieces:
            os.posix_fadvise(fd, piece.offset, piece.nbytes, os.POSIX_FADV_WILLNEED)
        return sum(piece.nbytes for piece in pieces)

    def forget(self, layer: int, expert: int) -> None:
        """With ``page_cache=False``: drop this expert's pages from the OS page cache (a
        readahead that no load used). Nothing otherwise.

        The readahead may still be in flight, and the advice skips a page under I/O, which then
        stays cached once read. The range is therefore read first: a copy from memory where the
        readahead is done, a wait for it where it is not; call this when the readahead has had
        its time (the prefetcher does after the layer's own loads)."""
        if not self.page_cache:
            for piece in self.slices(layer, expert):
                self._pread(piece.offset, piece.nbytes, piece.tensor)
                self._drop_pages(piece.offset, piece.nbytes)

    def drop_page_cache(self) -> None:
        """With ``page_cache=False``: drop the whole file's pages from the OS page cache (what
        was cached before the store opened it, or another reader of the file left there).
        Nothing otherwise."""
        if not self.page_cache:
            self._drop_pages(0, 0)  # length 0: to the end of the file

    def _drop_pages(self, offset: int, nbytes: int) -> None:
        fd = self._fd
        if fd is not None:
            os.posix_fadvise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)

    @property
    def bytes_read(self) -> int:
        with self._lock:
            return self._bytes_read

    @property
    def loads(self) -> int:
        with self._lock:
            return self._loads

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> ExpertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def _checked_type(tensor: TensorInfo, path: Path,
                  supported: frozenset = SUPPORTED_TYPES) -> gguf.GGMLQuantizationType:
    try:
        qtype = gguf.GGMLQuantizationType(tensor.type_id)
    except ValueError:
        qtype = None
    if qtype not in supported or tensor.nbytes is None:
        names = ", ".join(sorted(t.name for t in supported))
        raise UnsupportedExpertType(f"{path}: {tensor.name} is stored as {tensor.dtype}; the "
                                    f"expert store dequantises only {names}")
    return qtype


def _whole(tensor: TensorInfo, path: Path, supported: frozenset = SUPPORTED_TYPES) -> ExpertSlice:
    """A whole tensor as one slice: rows of its last numpy dimension, float32 once read."""
    rows = int(np.prod(tensor.shape[:-1])) if len(tensor.shape) > 1 else 1
    return ExpertSlice(tensor.name, tensor.offset, tensor.nbytes,
                       _checked_type(tensor, path, supported), (rows, tensor.shape[-1]))
