"""Hostile adapter files: validate_adapter raises AdapterError or returns tensors inside the file.

Valid tiny adapters are mutated (truncated, bytes flipped, header counts, string lengths, dims,
types and offsets set to absurd values at their exact byte positions, found with gguf's own
reader) and ``validate_adapter`` must either refuse them with ``AdapterError`` or return an
``AdapterInfo`` whose every tensor lies inside the file and which gguf's reader reads the same way;
never another exception, never a large allocation, never a hang.
"""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.backends.catalog import AdapterError, BaseModelInfo, validate_adapter


@dataclass(frozen=True)
class Slot:
    """A header field of a valid file: where it is, how wide, what it is."""

    pos: int
    width: int  # 4 (u32) or 8 (u64)
    label: str


@dataclass(frozen=True)
class Subject:
    data: bytes = field(repr=False)  # kept out of hypothesis's failure reports
    slots: tuple[Slot, ...] = field(repr=False)
    header_end: int  # where the data section starts
    base: BaseModelInfo
    workdir: Path


def header_slots(path: Path) -> tuple[tuple[Slot, ...], int]:
    """Every count, length, type, dim and offset of the header, from gguf.GGUFReader."""
    reader = gguf.GGUFReader(path)
    slots = [Slot(4, 4, "version"), Slot(8, 8, "tensor count"), Slot(16, 8, "kv count")]
    for kv in reader.fields.values():
        if kv.name.startswith("GGUF."):
            continue
        pos = kv.offset
        key_len = int(kv.parts[0][0])
        slots.append(Slot(pos, 8, f"length of key {kv.name}"))
        pos += 8 + key_len
        slots.append(Slot(pos, 4, f"type of {kv.name}"))
        value_type = gguf.GGUFValueType(int(kv.parts[2][0]))
        pos += 4
        if value_type is gguf.GGUFValueType.STRING:
            slots.append(Slot(pos, 8, f"length of the value of {kv.name}"))
        elif value_type is gguf.GGUFValueType.ARRAY:
            slots.append(Slot(pos, 4, f"element type of {kv.name}"))
            slots.append(Slot(pos + 4, 8, f"element count of {kv.name}"))
    for tensor in reader.tensors:
        pos = tensor.field.offset
        slots.append(Slot(pos, 8, f"name length of {tensor.name}"))
        pos += 8 + len(tensor.name.encode())
        slots.append(Slot(pos, 4, f"n_dims of {tensor.name}"))
        pos += 4
        for i in range(len(tensor.shape)):
            slots.append(Slot(pos, 8, f"dim {i} of {tensor.name}"))
            pos += 8
        slots.append(Slot(pos, 4, f"type of {tensor.name}"))
        slots.append(Slot(pos + 4, 8, f"offset of {tensor.name}"))
    header_end = min(int(t.data_offset) for t in reader.tensors)
    return tuple(slots), header_end


@pytest.fixture(scope="module")
def subject(tiny_models, tmp_path_factory) -> Subject:
    path = tiny_models.adapters[0]
    slots, header_end = header_slots(path)
    return Subject(path.read_bytes(), slots, header_end,
                   BaseModelInfo.from_gguf(tiny_models.base), tmp_path_factory.mktemp("fuzz"))


def set_field(data: bytearray, slot: Slot, value: int) -> None:
    fmt = "<I" if slot.width == 4 else "<Q"
    data[slot.pos:slot.pos + slot.width] = struct.pack(fmt, value % (1 << (8 * slot.width)))


def check(subject: Subject, data: bytes | bytearray) -> bool:
    """The contract; True when the file was accepted."""
    path = subject.workdir / "fuzz.gguf"
    path.write_bytes(bytes(data))
    try:
        info = validate_adapter(path, subject.base)
    except AdapterError as exc:
        assert exc.path == path and exc.reason
        return False
    assert info.file_size == len(data)
    assert info.nbytes > 0
    assert info.nbytes == sum(t.nbytes for t in info.tensors if t.name.endswith(
        (".lora_a", ".lora_b")))
    for t in info.tensors:
        assert t.nbytes is not None and t.offset >= 0
        assert t.offset + t.nbytes <= len(data), t
    # What was accepted, gguf's own reader reads the same way.
    reader = gguf.GGUFReader(path)
    theirs = {t.name: (tuple(int(d) for d in reversed(t.shape)), int(t.data_offset),
                       int(t.n_bytes)) for t in reader.tensors}
    ours = {t.name: (t.shape, t.offset, t.nbytes) for t in info.tensors}
    assert ours == theirs
    return True


ABSURD_U64 = st.one_of(
    st.sampled_from([0, 1, 7, 2**31, 2**32 - 1, 2**32, 2**40, 2**60, 2**62, 2**63 - 1, 2**63,
                     2**64 - 1]),
    st.integers(0, 4096),
    st.integers(0, 2**64 - 1),
)
ABSURD_U32 = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 30, 41, 2**31,
                                        2**32 - 1]),
                       st.integers(0, 2**32 - 1))
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_unmutated_file_passes_the_contract(subject):
    assert check(subject, subject.data)
    assert len(subject.slots) > 3 + 5 * 2 + 18 * 5  # the slot table found the fields


@pytest.mark.timeout(120)
@FUZZ
@given(st.data())
def test_truncated_files_are_refused(subject, data):
    cut = data.draw(st.integers(0, len(subject.data) - 1))
    # The last tensor ends at the end of the file, so every truncation loses data.
    assert not check(subject, subject.data[:cut])


@pytest.mark.timeout(120)
@FUZZ
@given(st.data())
def test_flipped_header_bytes(subject, data):
    buf = bytearray(subject.data)
    flips = data.draw(st.lists(st.tuples(st.integers(0, subject.header_end - 1),
                                         st.integers(1, 255)), min_size=1, max_size=8))
    for pos, mask in flips:
        buf[pos] ^= mask
    check(subject, buf)


@pytest.mark.timeout(120)
@FUZZ
@given(st.data())
def test_absurd_header_fields(subject, data):
    buf = bytearray(subject.data)
    for _ in range(data.draw(st.integers(1, 3))):
        slot = data.draw(st.sampled_from(subject.slots))
        value = data.draw(ABSURD_U32 if slot.width == 4 else ABSURD_U64)
        set_field(buf, slot, value)
    check(subject, buf)


@pytest.mark.timeout(120)
@FUZZ
@given(st.data())
def test_spliced_and_flipped_anywhere(subject, data):
    buf = bytearray(subject.data)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[pos:pos + data.draw(st.integers(1, 16))]
    check(subject, buf)


def slot(subject: Subject, label: str) -> Slot:
    return next(s for s in subject.slots if s.label == label)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("label, value, reason", [
    ("tensor count", 2**60, "header claims 1152921504606846976 tensors, more than the"),
    ("kv count", 2**60, "header claims 1152921504606846976 metadata entries, more than the"),
    ("kv count", 2**64 - 1, "metadata entries, more than the"),
    ("length of key general.architecture", 2**62,
     "key 0 claims 4611686018427387904 bytes (at most 1073741824)"),
    ("length of key general.architecture", 10**6, "key 0 claims 1000000 bytes but only"),
    ("length of the value of general.name", 2**62, "the value of 'general.name' claims"),
    ("type of general.name", 2**31, "key 'general.name' has invalid value type 2147483648"),
    ("name length of blk.0.attn_q.weight.lora_a", 2**62, "the name of tensor 0 claims"),
    ("name length of blk.0.attn_q.weight.lora_a", 100,
     "the name of tensor 0 is 100 bytes long (ggml allows at most 63)"),
    ("n_dims of blk.0.attn_q.weight.lora_a", 2**31,
     "tensor 'blk.0.attn_q.weight.lora_a' has 2147483648 dimensions (at most 4)"),
    ("dim 0 of blk.0.attn_q.weight.lora_a", 2**63, "has a negative dimension"),
    ("dim 1 of blk.0.attn_q.weight.lora_a", 2**62,
     "tensor 'blk.0.attn_q.weight.lora_a' has 295147905179352825856 elements"),
    ("dim 1 of blk.0.attn_q.weight.lora_a", 2**40, "extends past the end of the file"),
    ("offset of blk.0.attn_q.weight.lora_a", 2**62,
     "tensor 'blk.0.attn_q.weight.lora_a' has data offset 4611686018427387904, expected 0"),
    ("offset of blk.2.ffn_up.weight.lora_b", 2**62, "has data offset 4611686018427387904"),
    ("type of blk.0.attn_q.weight.lora_a", 2**31,
     "tensor 'blk.0.attn_q.weight.lora_a' has unknown ggml type 2147483648"),
    ("type of blk.0.attn_q.weight.lora_a", 2,  # Q4_0: 18 bytes per 32: a smaller tensor
     "has data offset"),
])
def test_absurd_values_are_refused_with_the_reason_and_no_big_allocation(subject, label, value,
                                                                         reason):
    buf = bytearray(subject.data)
    set_field(buf, slot(subject, label), value)
    path = subject.workdir / "absurd.gguf"
    path.write_bytes(bytes(buf))
    tracemalloc.start()
    try:
        with pytest.raises(AdapterError) as info:
            validate_adapter(path, subject.base)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason in info.value.reason, info.value.reason
    assert peak < 4 << 20, f"validation allocated {peak} bytes"
