"""Hostile inputs made for real: PNG headers that declare huge images, WAV files with lying
headers, and model version folders built with ``onnx.helper`` that break one promise each."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.files import sha256_file

LABELS = ["ok", "scratch", "spot", "crack"]


def png_declaring(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header declares ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def wav_bytes(*, rate: int = 16000, channels: int = 1, width: int = 2, frames: int = 1600) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\0" * frames * channels * width)
    return buffer.getvalue()


def _classifier_graph(
    outputs: int, *, declare_output_shape: bool = True, extra_nodes: list[Any] | None = None
) -> onnx.ModelProto:
    """image [N,1,64,64] → Flatten → MatMul → logits [N, outputs] (+ ``extra_nodes`` feeding an
    Add of 0 so they stay in the graph)."""
    weights = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(64 * 64, outputs)).astype(np.float32), "weights"
    )
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
    ]
    initialisers = [weights]
    last = "scores"
    for node, tensors in extra_nodes or []:
        nodes.append(node)
        initialisers += tensors
        nodes.append(helper.make_node("Add", [last, node.output[0]], [f"{last}+"]))
        last = f"{last}+"
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", outputs if declare_output_shape else "classes"]
            )
        ],
        initialisers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def classifier(outputs: int = 4, *, declare_output_shape: bool = True) -> onnx.ModelProto:
    return _classifier_graph(outputs, declare_output_shape=declare_output_shape)


def constant_of_shape_model(shape: list[int]) -> onnx.ModelProto:
    """A classifier that also builds ``ConstantOfShape(shape)`` (ORT folds it at load)."""
    shape_tensor = numpy_helper.from_array(np.asarray(shape, dtype=np.int64), "big_shape")
    make_big = helper.make_node(
        "ConstantOfShape",
        ["big_shape"],
        ["big"],
        value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
    )
    reduce = helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0)
    model = _classifier_graph(4, extra_nodes=[(reduce, [])])
    model.graph.node.insert(0, make_big)
    model.graph.initializer.append(shape_tensor)
    return model


def external_tensor_model(folder: Path, elements: int) -> onnx.ModelProto:
    """A classifier with one more weight of ``elements`` float32 values stored in an external
    file that holds only 16 bytes of them."""
    model = _classifier_graph(4)
    tensor = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[elements])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(elements * 4))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    model.graph.initializer.append(tensor)
    return model


def write_version(
    root: Path,
    version: str,
    model: onnx.ModelProto,
    *,
    labels: list[str] | None = None,
    manifest_edit: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """``root/defect/<version>/`` with ``model.onnx`` and a manifest sealed with its sha256."""
    folder = root / "defect" / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    onnx.save(model, str(folder / "model.onnx"))
    manifest: dict[str, Any] = {
        "name": "defect",
        "version": version,
        "input": {"name": "image", "shape": [-1, 1, 64, 64], "color": "grayscale"},
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.25]},
        "output": {"name": "logits", "kind": "logits"},
        "labels": labels or LABELS,
        "ok_label": "ok",
        "variants": {"fp32": {"file": "model.onnx", "sha256": sha256_file(folder / "model.onnx")}},
    }
    for key, value in (manifest_edit or {}).items():
        if key.startswith("fp32."):
            manifest["variants"]["fp32"][key.removeprefix("fp32.")] = value
        else:
            manifest[key] = value
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()
