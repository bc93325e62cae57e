"""``moltbot model quantize``: ONNX Runtime static INT8 (QDQ, per-channel) from calibration
images, with size and held-out accuracy before and after, written as a new model version.

Held-out images are a folder per label (``held_out/scratch/*.png`` …). The first convolution is
kept FP32 by default: on thin, faint defects an 8-bit input costs accuracy.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.errors import InputError
from edge.files import sha256_file
from edge.inference.manifest import MANIFEST_FILE, ModelManifest
from edge.inference.preprocess import decode_image, softmax, to_tensor
from edge.inference.sources_images import image_files
from edge.inference.verification import verify_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizationReport:
    fp32_bytes: int
    int8_bytes: int
    fp32_accuracy: float | None
    int8_accuracy: float | None
    images: int
    output: Path


def load_tensors(folder: Path, manifest: ModelManifest) -> NDArray[np.float32]:
    files = image_files(folder)
    if not files:
        raise InputError(
            "no images found", where=str(folder), hint="put PNG/JPEG frames from the line in it"
        )
    return np.concatenate(
        [to_tensor(decode_image(p.read_bytes(), str(p)), manifest) for p in files]
    )


def load_labelled(
    folder: Path, manifest: ModelManifest
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    tensors, labels = [], []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if label_dir.name not in manifest.labels:
            raise InputError(
                f"held-out folder {label_dir.name!r} is not a model label",
                where=str(label_dir),
                hint=f"use one of {manifest.labels}",
            )
        batch = load_tensors(label_dir, manifest)
        tensors.append(batch)
        labels += [manifest.labels.index(label_dir.name)] * len(batch)
    if not tensors:
        raise InputError(
            "held-out folder has no label subfolders",
            where=str(folder),
            hint="lay it out as held_out/<label>/*.png",
        )
    return np.concatenate(tensors), np.asarray(labels, dtype=np.int64)


class _Calibration(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, tensors: NDArray[np.float32], input_name: str) -> None:
        self._batches: Iterator[dict[str, NDArray[np.float32]]] = iter(
            [{input_name: tensors[i : i + 32]} for i in range(0, len(tensors), 32)]
        )

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self._batches, None)


def accuracy(
    path: Path, manifest: ModelManifest, tensors: NDArray[np.float32], labels: NDArray[np.int64]
) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run([manifest.output.name], {manifest.input.name: tensors})[0]
    return float((outputs.argmax(axis=1) == labels).mean())


def quantize_model(
    source: Path,
    calibration: Path,
    held_out: Path | None,
    output: Path,
    version: str,
    *,
    keep_first_conv_fp32: bool = True,
) -> QuantizationReport:
    manifest = verify_folder(source)
    fp32 = manifest.variants.get("fp32")
    if fp32 is None:
        raise InputError(
            "the model has no fp32 variant to quantise",
            where=str(source),
            hint="quantise from the FP32 export",
        )
    if output.exists():
        raise InputError("output folder exists", where=str(output), hint="choose a new folder")
    fp32_path = source / fp32.file
    calibration_tensors = load_tensors(calibration, manifest)
    output.mkdir(parents=True)
    shutil.copy2(fp32_path, output / fp32.file)
    int8_path = output / "model.int8.onnx"
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        first_conv = (
            [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"][:1]
            if keep_first_conv_fp32
            else []
        )
        quantize_static(
            str(prepared),
            str(int8_path),
            _Calibration(calibration_tensors, manifest.input.name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=first_conv,
        )
    fp32_accuracy = int8_accuracy = None
    if held_out is not None:
        tensors, labels = load_labelled(held_out, manifest)
        fp32_accuracy = accuracy(fp32_path, manifest, tensors, labels)
        int8_accuracy = accuracy(int8_path, manifest, tensors, labels)
    _write_manifest(source, output, manifest, version, fp32_accuracy, int8_accuracy, int8_path)
    return QuantizationReport(
        fp32_path.stat().st_size,
        int8_path.stat().st_size,
        fp32_accuracy,
        int8_accuracy,
        len(calibration_tensors),
        output,
    )


def _write_manifest(
    source: Path,
    output: Path,
    manifest: ModelManifest,
    version: str,
    fp32_accuracy: float | None,
    int8_accuracy: float | None,
    int8_path: Path,
) -> None:
    data: dict[str, Any] = manifest.model_dump(mode="json")
    data["version"] = version
    fp32 = data["variants"]["fp32"]
    if fp32_accuracy is not None:
        fp32["accuracy"] = round(fp32_accuracy, 4)
    int8: dict[str, Any] = {
        "file": int8_path.name,
        "sha256": sha256_file(int8_path),
        "accuracy": None if int8_accuracy is None else round(int8_accuracy, 4),
        "atol": 0.02,
    }
    if manifest.reference_input:
        (output / manifest.reference_input).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / manifest.reference_input, output / manifest.reference_input)
        inputs = np.load(source / manifest.reference_input)
        for precision, variant, path in (
            ("fp32", fp32, output / fp32["file"]),
            ("int8", int8, int8_path),
        ):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            raw = session.run([manifest.output.name], {manifest.input.name: inputs})[0]
            result = softmax(raw) if manifest.output.kind == "logits" else raw
            name = f"reference/{precision}.npy"
            np.save(output / name, result)
            variant["reference_output"] = name
    data["variants"] = {"fp32": fp32, "int8": int8}
    (output / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n")
