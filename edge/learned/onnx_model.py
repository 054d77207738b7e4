"""The learned eviction network as an ONNX file: written from the numpy weights, read back checked.

**Export** (``export_onnx``) builds the graph of ``DuelingQNet.forward`` node by node with
``onnx.helper`` (MatMul/Add/Relu twice, the value and advantage heads, the dueling combine
``Q = V + (A - ReduceMean(A))``): input ``x`` float32 ``[N, N_INPUTS]`` with a dynamic batch
dimension, output ``q`` float32 ``[N, 2]``. The model's metadata_props carry what serving checks
(``feature_schema_version``, ``input_names``, ``hidden``) and whatever the caller adds (training
traces, seed); every value is stored as JSON text. The file is written atomically. ``onnx`` is in
the ``train`` extra, not a runtime dependency, so it is imported inside ``export_onnx`` only.

**Load** (``load_model_file``) needs ONNX Runtime alone: the bytes are hashed (and compared with
an expected sha256 when given), parsed by an ``InferenceSession``, and its metadata (ORT's
``custom_metadata_map``) and graph signature compared with ``edge.learned.network``'s schema. Any
problem is a ``ModelError`` naming the file and what is wrong, so a device never serves a model
trained on other features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge.errors import EdgeError
from edge.fileio import write_atomic
from edge.learned.network import (
    EVICT,
    FEATURE_SCHEMA_VERSION,
    INPUT_NAMES,
    KEEP,
    N_ACTIONS,
    N_INPUTS,
    DuelingQNet,
)

# The model the ``learned`` policy serves when its settings name none.
SHIPPED_MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "eviction.onnx"

INPUT = "x"
OUTPUT = "q"
# Opset 17 is the last where ReduceMean takes its axes as an attribute; IR 8 is read by every
# ONNX Runtime from 1.14, well below the oldest one edge accepts.
OPSET = 17
IR_VERSION = 8
# Metadata the export writes itself; a caller's metadata may not use these keys.
RESERVED_METADATA = ("feature_schema_version", "input_names", "hidden")


class ModelError(EdgeError):
    """A model file is missing, corrupt, not the expected one, or trained on another schema."""


@dataclass(frozen=True)
class ModelFile:
    """A model file read and checked: its bytes, their sha256 and its parsed metadata."""

    path: Path
    data: bytes
    sha256: str
    metadata: dict[str, Any]  # every metadata_props entry, JSON-decoded where it is JSON

    @property
    def hidden(self) -> int:
        return int(self.metadata["hidden"])


def export_onnx(net: DuelingQNet, path: str | os.PathLike[str], *,
                metadata: Mapping[str, Any] | None = None) -> str:
    """Write ``net`` to ``path`` as an ONNX model equal to ``net.forward``; returns its sha256.

    ``metadata`` (JSON-serialisable values) is stored beside the schema's own entries."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    net.check()
    extra = dict(metadata or {})
    taken = sorted(set(extra) & set(RESERVED_METADATA))
    if taken:
        raise ValueError(f"metadata key {taken[0]!r} is written by the export itself")
    props = {"feature_schema_version": FEATURE_SCHEMA_VERSION, "input_names": list(INPUT_NAMES),
             "hidden": net.hidden, **extra}
    try:
        encoded = {str(k): json.dumps(v, sort_keys=True) for k, v in props.items()}
    except TypeError as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None

    weights = [numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
               for name, value in net.parameters().items()]
    node = helper.make_node
    nodes = [
        node("MatMul", [INPUT, "w1"], ["z1"]), node("Add", ["z1", "b1"], ["a1"]),
        node("Relu", ["a1"], ["h1"]),
        node("MatMul", ["h1", "w2"], ["z2"]), node("Add", ["z2", "b2"], ["a2"]),
        node("Relu", ["a2"], ["h2"]),
        node("MatMul", ["h2", "wv"], ["zv"]), node("Add", ["zv", "bv"], ["value"]),
        node("MatMul", ["h2", "wa"], ["za"]), node("Add", ["za", "ba"], ["advantage"]),
        node("ReduceMean", ["advantage"], ["advantage_mean"], axes=[1], keepdims=1),
        node("Sub", ["advantage", "advantage_mean"], ["centred"]),
        node("Add", ["value", "centred"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes, "dueling_q_network",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", N_INPUTS])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", N_ACTIONS])],
        initializer=weights)
    model = helper.make_model(graph, producer_name="edge",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = (f"edge learned eviction: dueling Q-network over {N_INPUTS} inputs "
                        f"(feature schema {FEATURE_SCHEMA_VERSION}); q[:, {EVICT}] - "
                        f"q[:, {KEEP}] is the eviction preference")
    helper.set_model_props(model, encoded)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def session_options(threads: int = 1) -> ort.SessionOptions:
    """One decision at a time, on the caller's thread: no inter-op parallelism, ``threads``
    intra-op threads (1 by default: the network is tiny and a pool's wake-up costs more)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: a rejected file is reported as ModelError
    return options


def open_model(path: str | os.PathLike[str], *, expected_sha256: str | None = None,
               threads: int = 1) -> tuple[ModelFile, ort.InferenceSession]:
    """The checked model file and an ONNX Runtime session serving it (see the module doc)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"eviction model {path}: no such file") from None
    except OSError as exc:
        raise ModelError(f"eviction model {path}: cannot read it: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelError(f"eviction model {path}: sha256 is {digest}, expected "
                         f"{expected_sha256.lower()} (a different or damaged file)")
    try:
        session = ort.InferenceSession(data, session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types; any of them means unusable
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"eviction model {path}: not a valid ONNX model ({first_line})") \
            from None
    metadata = {key: _decoded(value)
                for key, value in session.get_modelmeta().custom_metadata_map.items()}
    _check_schema(path, metadata, session)
    return ModelFile(path, data, digest, metadata), session


def load_model_file(path: str | os.PathLike[str], *,
                    expected_sha256: str | None = None) -> ModelFile:
    """Read and check the model at ``path`` (without the ``onnx`` package); ``ModelError``
    naming the file when it is missing, not the expected sha256, not ONNX, or of another
    feature schema."""
    model, _ = open_model(path, expected_sha256=expected_sha256)
    return model


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:  # written by something other than export_onnx: keep the text
        return value


def _check_schema(path: Path, metadata: dict[str, Any], session: ort.InferenceSession) -> None:
    def wrong(what: str) -> ModelError:
        return ModelError(f"eviction model {path}: {what}; it was not trained for this "
                          f"version of edge (feature schema {FEATURE_SCHEMA_VERSION})")

    version = metadata.get("feature_schema_version")
    if version is None:
        raise wrong("no feature_schema_version in its metadata")
    if version != FEATURE_SCHEMA_VERSION:
        raise wrong(f"feature schema version is {version!r}, expected {FEATURE_SCHEMA_VERSION}")
    names = metadata.get("input_names")
    if not isinstance(names, list) or tuple(names) != INPUT_NAMES:
        raise wrong(f"input names are {names!r}, expected {list(INPUT_NAMES)}")
    hidden = metadata.get("hidden")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise wrong(f"hidden size {hidden!r} is not a positive integer")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT] or inputs[0].shape[1:] != [N_INPUTS] \
            or inputs[0].type != "tensor(float)":
        shown = [(i.name, i.type, i.shape) for i in inputs]
        raise wrong(f"its inputs are {shown}, expected one float tensor {INPUT!r} of shape "
                    f"[N, {N_INPUTS}]")
    if [o.name for o in outputs] != [OUTPUT] or outputs[0].shape[1:] != [N_ACTIONS] \
            or outputs[0].type != "tensor(float)":
        shown = [(o.name, o.type, o.shape) for o in outputs]
        raise wrong(f"its outputs are {shown}, expected one float tensor {OUTPUT!r} of shape "
                    f"[N, {N_ACTIONS}]")
