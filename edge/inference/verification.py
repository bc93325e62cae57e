"""Checks a model version must pass before it may serve: files, sha256, ONNX validity, inputs
matching the manifest, and (on the target backend) its reference outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from edge.errors import ModelRejectedError
from edge.files import sha256_file
from edge.inference.backends.base import LoadedModel
from edge.inference.manifest import ModelManifest, Precision, Variant, load_manifest
from edge.inference.preprocess import softmax

ONNX_FLOAT = onnx.TensorProto.FLOAT


def verify_folder(folder: Path) -> ModelManifest:
    """Static checks of every variant; raises ``ModelRejectedError`` naming file and reason."""
    if not folder.is_dir():
        raise ModelRejectedError(
            "model folder does not exist",
            where=str(folder),
            hint="pass a folder with manifest.json and the .onnx file(s)",
        )
    manifest = load_manifest(folder)
    for precision, variant in manifest.variants.items():
        _verify_variant(folder, manifest, precision, variant)
    if manifest.reference_input and not (folder / manifest.reference_input).is_file():
        raise ModelRejectedError(
            "reference input file is missing",
            where=str(folder / manifest.reference_input),
            hint="ship it with the model or drop reference_input",
        )
    return manifest


def _verify_variant(
    folder: Path, manifest: ModelManifest, precision: Precision, variant: Variant
) -> None:
    path = folder / variant.file
    if not path.is_file():
        raise ModelRejectedError(
            f"{precision} model file is missing",
            where=str(path),
            hint="copy the whole model folder",
        )
    actual = sha256_file(path)
    if actual != variant.sha256:
        raise ModelRejectedError(
            f"sha256 mismatch: the manifest says {variant.sha256[:16]}…, the file is "
            f"{actual[:16]}… (corrupt or replaced)",
            where=str(path),
            hint="copy the model folder again, or re-export it with its manifest",
        )
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, … for bad files
        raise ModelRejectedError(
            f"not a valid ONNX model: {type(exc).__name__}: {exc}",
            where=str(path),
            hint="re-export the model",
        ) from exc
    _check_io(model.graph, manifest, path)


def _check_io(graph: onnx.GraphProto, manifest: ModelManifest, path: Path) -> None:
    initialisers = {init.name for init in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initialisers}
    spec = manifest.input
    if spec.name not in inputs:
        raise ModelRejectedError(
            f"the model has no input {spec.name!r} (it has {sorted(inputs)})",
            where=str(path),
            hint="fix input.name in manifest.json",
        )
    tensor = inputs[spec.name].type.tensor_type
    if tensor.elem_type != ONNX_FLOAT:
        raise ModelRejectedError(
            f"input {spec.name!r} is not float32",
            where=str(path),
            hint="export the model with a float32 input",
        )
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    expected = spec.shape
    if len(dims) != len(expected) or any(
        want not in (-1, have) and have != -1 for want, have in zip(expected, dims, strict=False)
    ):
        raise ModelRejectedError(
            f"input {spec.name!r} has shape {dims}, the manifest says {expected}",
            where=str(path),
            hint="make manifest.json match the exported model",
        )
    outputs = [o.name for o in graph.output]
    if manifest.output.name not in outputs:
        raise ModelRejectedError(
            f"the model has no output {manifest.output.name!r} (it has {outputs})",
            where=str(path),
            hint="fix output.name in manifest.json",
        )


def probabilities(model: LoadedModel, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    raw = model.run(batch)
    return softmax(raw) if model.manifest.output.kind == "logits" else raw


def check_reference(model: LoadedModel, folder: Path) -> float | None:
    """Run the shipped reference inputs on the target backend; refuse beyond the tolerance.

    Returns the largest deviation seen, or None when the version ships no reference.
    """
    manifest = model.manifest
    source: Precision = "fp32" if model.precision == "fp16" else model.precision
    variant = manifest.variants.get(source)
    if manifest.reference_input is None or variant is None or variant.reference_output is None:
        return None
    inputs = np.load(folder / manifest.reference_input)
    expected = np.load(folder / variant.reference_output)
    atol = variant.atol * (10 if model.precision == "fp16" else 1)
    got = probabilities(model, inputs.astype(np.float32))
    deviation = float(np.abs(got - expected).max())
    if deviation > atol:
        raise ModelRejectedError(
            f"reference outputs differ by {deviation:.4g} on {model.backend} "
            f"({model.precision}), more than the manifest's tolerance {atol:g}",
            where=str(folder),
            hint="this backend computes this model differently: do not "
            "deploy it here, or re-export and re-record the reference outputs",
        )
    return deviation
