"""Trace formats: round trips, streaming, format sniffing and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import TraceError
from edge.sim.trace import (
    ORACLE_GENERAL_DTYPE,
    LcsCsvColumns,
    Trace,
    TraceReader,
    iter_requests,
    key_id,
    read_trace,
    write_csv,
    write_jsonl,
    write_oracle_general,
    write_trace,
)


def full_trace(context_kind: str = "vector") -> Trace:
    rng = np.random.default_rng(7)
    n = 50
    names = ["adapter-a", "adapter-b", "ünïcode key"]
    keys = np.array([key_id(names[i % 3]) if i % 2 else i % 7 for i in range(n)], np.uint64)
    if context_kind == "vector":
        contexts = rng.standard_normal((n, 4))
    else:
        contexts = np.array([f"prompt {i}, with a comma and a \"quote\"" for i in range(n)],
                            dtype=object)
    return Trace(np.cumsum(rng.random(n)), keys, rng.integers(1, 10**6, n),
                 load_costs=rng.random(n), tenants=rng.integers(0, 3, n),
                 tenant_names=("t0", "t1", "t2"), contexts=contexts,
                 key_names={key_id(s): s for s in names})


def assert_same(a: Trace, b: Trace) -> None:
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.sizes, b.sizes)
    assert list(a.requests()) == list(b.requests())  # tenants by name, contexts, load costs


@pytest.mark.parametrize("ext,kind", [(".csv", "vector"), (".csv", "text"),
                                      (".jsonl", "vector"), (".jsonl", "text")])
def test_round_trip_keeps_every_field(tmp_path, ext, kind):
    trace = full_trace(kind)
    path = tmp_path / f"t{ext}"
    write_trace(trace, path)
    back = read_trace(path)
    assert_same(trace, back)
    assert back.context_kind == kind
    assert dict(back.key_names) == dict(trace.key_names)
    assert back.skipped == 0


def test_oracle_general_round_trip_and_next_access(tmp_path):
    keys = np.array([5, 9, 5, 5, 2**63 + 1, 9], np.uint64)
    trace = Trace([0, 1.5, 2, 3, 4, 5], keys, [10, 20, 10, 10, 30, 20])
    path = tmp_path / "t.oracleGeneral.bin"
    write_oracle_general(trace, path)
    raw = np.fromfile(path, ORACLE_GENERAL_DTYPE)
    assert path.stat().st_size == 24 * len(keys)
    # 1-based index of the next request of the same object, -1 if none (libCacheSim's layout)
    assert raw["next_access_vtime"].tolist() == [3, 6, 4, -1, -1, -1]
    assert raw["time"].tolist() == [0, 1, 2, 3, 4, 5]  # whole time units
    back = read_trace(path)
    np.testing.assert_array_equal(back.keys, keys)
    np.testing.assert_array_equal(back.sizes, trace.sizes)
    np.testing.assert_array_equal(back.times, np.floor(trace.times))


def test_oracle_general_time_unit_and_range(tmp_path):
    trace = Trace([0.0015, 0.25], [1, 2], [1, 1])
    write_oracle_general(trace, tmp_path / "ms.bin", time_unit=1e-3)
    assert np.fromfile(tmp_path / "ms.bin", ORACLE_GENERAL_DTYPE)["time"].tolist() == [1, 250]
    with pytest.raises(TraceError, match="uint32"):
        write_oracle_general(Trace([-1.0], [1], [1]), tmp_path / "neg.bin")


def test_truncated_oracle_general_names_the_byte_size(tmp_path):
    path = tmp_path / "t.bin"
    write_oracle_general(Trace(np.arange(3.0), [1, 2, 1], [4, 4, 4]), path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(TraceError, match=r"t\.bin.*67 bytes"):
        read_trace(path)
    trace = read_trace(path, skip_bad=True)
    assert len(trace) == 2 and trace.skipped == 1


def test_zero_size_record_is_bad(tmp_path):
    rec = np.zeros(3, ORACLE_GENERAL_DTYPE)
    rec["obj_id"] = [1, 2, 3]
    rec["obj_size"] = [8, 0, 8]
    path = tmp_path / "z.oracleGeneral.bin"
    rec.tofile(path)
    with pytest.raises(TraceError, match="record 2 has obj_size 0"):
        read_trace(path)
    assert read_trace(path, skip_bad=True).keys.tolist() == [1, 3]


def test_streaming_reader_chunks_equal_the_whole(tmp_path):
    trace = full_trace()
    for ext in (".csv", ".oracleGeneral.bin"):
        path = tmp_path / f"t{ext}"
        write_trace(trace.slice(0, 50) if ext == ".csv" else Trace(
            np.floor(trace.times), trace.keys, trace.sizes), path)
        whole = read_trace(path)
        chunks = list(TraceReader(path).chunks(size=7))
        assert [len(c) for c in chunks] == [7] * 7 + [1]
        np.testing.assert_array_equal(np.concatenate([c.keys for c in chunks]), whole.keys)
        streamed = list(iter_requests(path))
        assert [r.key for r in streamed] == whole.keys.tolist()
        assert [r.size for r in streamed] == whole.sizes.tolist()


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".oracleGeneral.bin"])
def test_limit(tmp_path, ext):
    path = tmp_path / f"t{ext}"
    write_trace(Trace(np.arange(10.0), np.arange(10), np.ones(10)), path)
    assert read_trace(path, limit=4).keys.tolist() == [0, 1, 2, 3]
    assert len(read_trace(path, limit=0)) == 0
    assert sum(1 for _ in iter_requests(path, limit=3)) == 3


LCS_CSV = "version,time,op,size,lbn\n1,100,2a,512,42\n1,101,2a,4096,7\n1,101,28,512,42\n"


def test_libcachesim_csv_columns(tmp_path):
    path = tmp_path / "io.csv"
    path.write_text(LCS_CSV)
    cols = LcsCsvColumns(time=2, key=5, size=4)
    fast = read_trace(path, columns=cols)  # numpy's parser
    slow = read_trace(path, columns=cols, limit=None, skip_bad=True)
    streamed = list(iter_requests(path, columns=cols))
    assert fast.keys.tolist() == [42, 7, 42] == [r.key for r in streamed]
    assert fast.sizes.tolist() == [512, 4096, 512] == slow.sizes.tolist()
    assert fast.times.tolist() == [100, 101, 101] == [r.time for r in streamed]
    # no size column: every size is 1; no time column: the request index
    t = read_trace(path, columns=LcsCsvColumns(time=0, key=5))
    assert t.sizes.tolist() == [1, 1, 1] and t.times.tolist() == [0, 1, 2]
    # names as keys (libCacheSim's obj_id_is_num=0)
    named = read_trace(path, columns=LcsCsvColumns(time=2, key=3, numeric_keys=False))
    assert named.keys[0] == named.keys[1] == key_id("2a") and named.key_names[key_id("28")] == "28"


def test_libcachesim_csv_bad_line_falls_back_to_the_exact_error(tmp_path):
    path = tmp_path / "io.csv"
    path.write_text(LCS_CSV + "1,102,2a,-5,9\n1,103,2a,512\n")
    cols = LcsCsvColumns(time=2, key=5, size=4)
    with pytest.raises(TraceError, match=r"io\.csv:5: size '-5' is not a positive integer"):
        read_trace(path, columns=cols)
    t = read_trace(path, columns=cols, skip_bad=True)
    assert len(t) == 3 and t.skipped == 2


def test_csv_sniffing_explains_libcachesim_headers(tmp_path):
    path = tmp_path / "io.csv"
    path.write_text(LCS_CSV)
    with pytest.raises(TraceError, match=r"io\.csv:1: header .*LcsCsvColumns"):
        read_trace(path)
    with pytest.raises(TraceError, match="cannot tell the trace format"):
        read_trace(tmp_path / "trace.txt")
    with pytest.raises(TraceError, match="decompress first"):
        read_trace(tmp_path / "trace.oracleGeneral.bin.zst")
    with pytest.raises(TraceError, match="needs columns"):
        read_trace(path, fmt="lcs_csv")
    with pytest.raises(TraceError, match="cannot open"):
        read_trace(tmp_path / "missing.csv")


BAD_CSV_LINES = [
    ("1.0,k,abc", "size 'abc' is not a positive integer"),
    ("1.0,k,0", "size '0' is not a positive integer"),
    ("1.0,k", "2 fields, header has 3"),
    ("nan,k,5", "time 'nan' is not finite"),
    ("x,k,5", "time 'x' is not a number"),
    ("1.0,18446744073709551616,5", "integer key 18446744073709551616 is outside 0..2\\*\\*64-1"),
    ("1.0,k,18446744073709551616", "size '18446744073709551616' is too large: sizes are at most "
                                   "2\\*\\*64-1 bytes"),
]


@pytest.mark.parametrize("line,message", BAD_CSV_LINES)
def test_csv_bad_line_error_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"time,key,size\n0.5,a,10\n{line}\n2.0,b,20\n")
    with pytest.raises(TraceError, match=rf"bad\.csv:3: {message}"):
        read_trace(path)
    t = read_trace(path, skip_bad=True)
    assert t.skipped == 1 and len(t) == 2
    reader = TraceReader(path, skip_bad=True)
    assert len(list(reader)) == 2 and reader.skipped == 1


BAD_JSONL_LINES = [
    ('{"time": 1, "key": "a", "size": 3', "not valid JSON"),  # truncated last line
    ('{"time": 1, "key": "a"}', "missing fields \\['size'\\]"),
    ('{"time": 1, "key": "a", "size": 3, "sise": 4}', "unknown fields \\['sise'\\]"),
    ('{"time": 1, "key": "a", "size": 3.5}', "size 3.5 is not a positive integer"),
    ('{"time": 1, "key": -4, "size": 3}', "integer key -4 is outside 0..2"),
    ('{"time": 1, "key": "a", "size": 3, "tenant": "x"}', "optional fields"),
    ('{"time": 1, "key": "a", "size": 3, "load_cost": -1}', "load_cost -1 must be"),
    ('[1, "a", 3]', "expected a JSON object"),
    ('{"time": 1, "key": "a", "size": 18446744073709551616}',
     "size 18446744073709551616 is too large"),
    # json's decoder recurses: a deep enough nesting was a RecursionError, not a bad line.
    ('{"time": 1, "key": "a", "size": 3, "context": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "JSON nested too deeply"),
]


@pytest.mark.parametrize("line,message", BAD_JSONL_LINES)
def test_jsonl_bad_line_error_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = '{"time": 0, "key": "a", "size": 3, "load_cost": 0.5}'
    if "load_cost" not in line and "tenant" not in line:
        good = '{"time": 0, "key": "a", "size": 3}'
    path.write_text(f"{good}\n{line}")
    with pytest.raises(TraceError, match=rf"bad\.jsonl:2: {message}"):
        read_trace(path)
    t = read_trace(path, skip_bad=True)
    assert t.skipped == 1 and len(t) == 1


def test_csv_context_nested_too_deep_for_a_vector_is_text(tmp_path):
    # "A JSON array of numbers is a vector, any other cell is text", however deep it nests.
    cell = "[" * 5000 + "]" * 5000
    path = tmp_path / "deep.csv"
    path.write_text(f"time,key,size,context\n0,1,1,{cell}\n")
    t = read_trace(path)
    assert t.context_kind == "text" and t.contexts[0] == cell


def test_total_bytes_is_exact_past_2_64():
    from edge.sim.trace import check_byte_total, total_bytes

    sizes = np.array([2**63, 2**63, 2**64 - 1, 5], dtype=np.uint64)
    assert int(sizes.sum()) == 4  # numpy's own sum wraps: what total_bytes avoids
    assert total_bytes(sizes) == 2**65 + 4
    assert total_bytes(np.empty(0, np.uint64)) == 0
    assert check_byte_total(sizes[3:]) == 5
    with pytest.raises(TraceError, match=r"total 36893488147419103236 bytes, 2\*\*64 or more"):
        check_byte_total(sizes)


def test_context_shape_must_not_change(tmp_path):
    path = tmp_path / "ctx.jsonl"
    path.write_text('{"time":0,"key":1,"size":1,"context":[1,2]}\n'
                    '{"time":1,"key":1,"size":1,"context":[1,2,3]}\n'
                    '{"time":2,"key":1,"size":1,"context":"text"}\n')
    with pytest.raises(TraceError, match=r"ctx\.jsonl:2: context is a vector of 3"):
        read_trace(path)
    assert read_trace(path, skip_bad=True).skipped == 2


def test_keys_digits_are_integers_names_are_stable_hashes(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text('{"time":0,"key":"42","size":1}\n{"time":1,"key":42,"size":1}\n'
                    '{"time":2,"key":"lora/math-v2","size":1}\n')
    t = read_trace(path)
    assert t.keys[0] == t.keys[1] == 42
    # golden value: ids of names must never change between versions (stored traces, configs)
    assert int(t.keys[2]) == key_id("lora/math-v2") == 4968169501486937726
    assert t.key_names == {4968169501486937726: "lora/math-v2"}


def test_csv_text_context_that_looks_like_a_vector_is_refused(tmp_path):
    trace = Trace([0.0], [1], [1], contexts=np.array(["[1, 2]"], dtype=object))
    with pytest.raises(TraceError, match="write this trace as JSONL"):
        write_csv(trace, tmp_path / "c.csv")
    write_jsonl(trace, tmp_path / "c.jsonl")
    assert read_trace(tmp_path / "c.jsonl").contexts[0] == "[1, 2]"


def test_trace_validates_and_is_read_only():
    with pytest.raises(ValueError, match="differ in length"):
        Trace([0.0, 1.0], [1], [1])
    with pytest.raises(ValueError, match="size 0"):
        Trace([0.0], [1], [0])
    with pytest.raises(ValueError, match="tenant codes"):
        Trace([0.0], [1], [1], tenants=[2], tenant_names=("a",))
    t = Trace([0.0], [1], [1])
    with pytest.raises(ValueError):
        t.keys[0] = 5
    assert t.keys.dtype == np.uint64 and t.sizes.dtype == np.uint64
    assert t.times.dtype == np.float64


def test_fast_and_line_readers_agree_on_odd_numbers(tmp_path):
    # numpy would read "+5" as 5; the documented rule (ASCII digits only) makes it a name.
    path = tmp_path / "odd.csv"
    path.write_text("time,key,size\n1, 7 ,3\n2,+5,4\n")
    whole = read_trace(path)
    assert whole.keys.tolist() == [7, key_id("+5")]
    assert [r.key for r in iter_requests(path)] == whole.keys.tolist()


def test_trace_keeps_callers_arrays_writable():
    keys = np.arange(3, dtype=np.uint64)
    t = Trace(np.zeros(3), keys, np.ones(3, np.uint64))
    keys[0] = 9  # the caller's array is not frozen by building a Trace from it
    assert not t.keys.flags.writeable


def test_jsonl_records_may_leave_out_the_context_and_carry_hit(tmp_path):
    # An access log: routed requests have a context, named ones do not; every one has "hit".
    path = tmp_path / "log.jsonl"
    path.write_text('{"time":0,"key":"a","size":5,"hit":false}\n'
                    '{"time":1,"key":"b","size":7,"hit":false,"context":[1.0,2.0]}\n'
                    '{"time":2,"key":"a","size":5,"hit":true}\n')
    trace = read_trace(path)
    assert trace.hits.tolist() == [False, False, True]
    assert [r.context for r in trace.requests()] == [None, (1.0, 2.0), None]
    assert trace.context_kind == "vector" and trace.contexts.shape == (3, 2)
    out = tmp_path / "again.jsonl"
    write_jsonl(trace, out)  # round trip keeps both
    again = read_trace(out)
    assert list(again.requests()) == list(trace.requests())
    assert again.slice(1, 3).hits.tolist() == [False, True]


def test_a_hit_that_is_not_a_boolean_names_the_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"time":0,"key":"a","size":5,"hit":false}\n'
                    '{"time":1,"key":"a","size":5,"hit":"yes"}\n')
    with pytest.raises(TraceError, match=r"log.jsonl:2: hit must be true or false"):
        read_trace(path)
