"""Checks a model version must pass before it may serve: files (every path inside the
version's folder), sha256, ONNX validity, inputs and outputs matching the manifest, the memory
it needs against what the device has, and (on the target backend) its reference outputs.

Nothing here follows a path out of the folder or unpickles anything: ``.npy`` files are loaded
with ``allow_pickle=False``, external tensor data is checked before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from edge.errors import ModelRejectedError, MoltbotError
from edge.files import sha256_file
from edge.inference import model_memory
from edge.inference.backends.base import LoadedModel
from edge.inference.manifest import ModelManifest, Precision, Variant, load_manifest
from edge.inference.preprocess import softmax

ONNX_FLOAT = onnx.TensorProto.FLOAT
EXTERNAL = onnx.TensorProto.EXTERNAL


def contained_path(folder: Path, relative: str, field: str) -> Path:
    """``folder / relative``, refused unless it stays inside ``folder`` (symbolic links too)."""
    candidate = Path(relative)
    inside = not candidate.is_absolute() and ".." not in candidate.parts
    if inside:
        try:
            inside = (folder / candidate).resolve().is_relative_to(folder.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
    if not inside:
        raise ModelRejectedError(
            f"{field} {relative!r} points outside the model folder",
            where=str(folder),
            hint="every file a manifest names must be inside its version folder "
            "(a plain file name, no '..', no absolute path, no link out)",
        )
    return folder / candidate


def verify_folder(folder: Path) -> ModelManifest:
    """Static checks of every variant; raises ``ModelRejectedError`` naming file and reason."""
    if not folder.is_dir():
        raise ModelRejectedError(
            "model folder does not exist",
            where=str(folder),
            hint="pass a folder with manifest.json and the .onnx file(s)",
        )
    manifest = load_manifest(folder)
    for field, relative in _named_files(manifest):
        contained_path(folder, relative, field)
    for precision, variant in manifest.variants.items():
        _verify_variant(folder, manifest, precision, variant)
    if manifest.reference_input and not (folder / manifest.reference_input).is_file():
        raise ModelRejectedError(
            "reference input file is missing",
            where=str(folder / manifest.reference_input),
            hint="ship it with the model or drop reference_input",
        )
    return manifest


def _named_files(manifest: ModelManifest) -> list[tuple[str, str]]:
    named = [("reference_input", manifest.reference_input)]
    for precision, variant in manifest.variants.items():
        named += [
            (f"variants.{precision}.file", variant.file),
            (f"variants.{precision}.reference_output", variant.reference_output),
        ]
    return [(field, value) for field, value in named if value is not None]


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
        model = onnx.load(str(path), load_external_data=False)  # checked before it is read
    except Exception as exc:  # onnx raises DecodeError, … for bad files
        raise _not_onnx(exc, path) from exc
    _check_external_data(model, folder, path)
    try:
        onnx.checker.check_model(str(path))  # by path: external data is found beside it
    except Exception as exc:  # onnx raises ValidationError, … for bad graphs
        raise _not_onnx(exc, path) from exc
    _check_io(model.graph, manifest, path)
    check_memory(model, path)


def _not_onnx(exc: Exception, path: Path) -> ModelRejectedError:
    return ModelRejectedError(
        f"not a valid ONNX model: {type(exc).__name__}: {exc}",
        where=str(path),
        hint="re-export the model",
    )


def _check_external_data(model: onnx.ModelProto, folder: Path, path: Path) -> None:
    """Tensors stored beside the model: inside the folder, and as large as they say."""
    for tensor in model.graph.initializer:
        if tensor.data_location != EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = contained_path(folder, info.get("location", ""), f"tensor {tensor.name!r}")
        declared = model_memory.tensor_bytes(list(tensor.dims), tensor.data_type)
        length = int(info["length"]) if info.get("length", "").isdigit() else declared
        offset = int(info["offset"]) if info.get("offset", "").isdigit() else 0
        size = location.stat().st_size if location.is_file() else -1
        if length != declared or offset + length > size:
            raise ModelRejectedError(
                f"tensor {tensor.name!r} declares {declared} bytes of external data; its file "
                f"{location.name!r} holds {max(size, 0)} bytes from offset {offset}",
                where=str(path),
                hint="copy the model's external data file(s) with it, or re-export the model",
            )


def check_memory(
    model: onnx.ModelProto, path: Path, available_bytes: int | None = None
) -> model_memory.MemoryEstimate:
    """Refuse a model whose weights and largest intermediate tensor exceed the free memory."""
    needed = model_memory.estimate(model)
    available = model_memory.available_bytes() if available_bytes is None else available_bytes
    usable = int(available * model_memory.HEADROOM)
    if needed.total_bytes > usable:
        largest = (
            f", its largest tensor {needed.largest_tensor!r} "
            f"{model_memory.gib(needed.largest_tensor_bytes)}"
            if needed.largest_tensor
            else ""
        )
        raise ModelRejectedError(
            f"this model needs at least {model_memory.gib(needed.total_bytes)} of memory "
            f"(weights {model_memory.gib(needed.weights_bytes)}{largest}); this device has "
            f"{model_memory.gib(available)} available, of which the model may use "
            f"{model_memory.gib(usable)}",
            where=str(path),
            hint="export a smaller model for this device (check the shapes of its weights and "
            "constant tensors)",
        )
    return needed


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
    outputs = {o.name: o for o in graph.output}
    if manifest.output.name not in outputs:
        raise ModelRejectedError(
            f"the model has no output {manifest.output.name!r} (it has {sorted(outputs)})",
            where=str(path),
            hint="fix output.name in manifest.json",
        )
    shape = outputs[manifest.output.name].type.tensor_type.shape
    out_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]
    if out_dims and (len(out_dims) != 2 or out_dims[1] not in (-1, len(manifest.labels))):
        raise _output_mismatch(manifest, out_dims, path)


def _output_mismatch(manifest: ModelManifest, dims: list[int], where: Path) -> ModelRejectedError:
    return ModelRejectedError(
        f"output {manifest.output.name!r} has shape {dims}, but the manifest lists "
        f"{len(manifest.labels)} labels {manifest.labels}: one score per label is needed, "
        f"shape [batch, {len(manifest.labels)}]",
        where=str(where),
        hint="make manifest.json's labels match the exported model's classes",
    )


def check_output_shape(model: LoadedModel, folder: Path) -> None:
    """Run one frame on the loaded model: the output must be one score per label."""
    manifest = model.manifest
    channels, (height, width) = manifest.input.channels, manifest.input.height_width
    got = run_checked(model, np.zeros((1, channels, height, width), dtype=np.float32), folder)
    if got.shape != (1, len(manifest.labels)):
        raise _output_mismatch(manifest, list(got.shape), folder)


@contextmanager
def backend_errors_refuse_the_model(
    action: str, backend: str, folder: Path, hint: str
) -> Iterator[None]:
    """Whatever a backend raises while it ``action``s a model (ORT/TensorRT have their own
    types; a hostile model can exhaust memory) becomes a refusal of the model."""
    try:
        yield
    except MoltbotError:
        raise
    except MemoryError as exc:
        raise ModelRejectedError(
            f"ran out of memory trying to {action} the model on {backend}",
            where=str(folder),
            hint="export a smaller model for this device",
        ) from exc
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelRejectedError(
            f"{backend} cannot {action} the model: {type(exc).__name__}: {first_line}",
            where=str(folder),
            hint=hint,
        ) from exc


def run_checked(
    model: LoadedModel, batch: NDArray[np.float32], folder: Path
) -> NDArray[np.float32]:
    """``model.run`` with whatever the backend raises turned into a refusal of the model."""
    hint = "check the manifest's input shape and the exported model"
    with backend_errors_refuse_the_model("run", model.backend, folder, hint):
        return np.asarray(model.run(batch))


def probabilities(
    model: LoadedModel, batch: NDArray[np.float32], folder: Path | None = None
) -> NDArray[np.float32]:
    raw = model.run(batch) if folder is None else run_checked(model, batch, folder)
    return softmax(raw) if model.manifest.output.kind == "logits" else raw


def load_array(folder: Path, relative: str, field: str) -> NDArray[np.float32]:
    """A ``.npy`` file of the model folder as float32; never unpickles, never leaves the folder."""
    path = contained_path(folder, relative, field)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ModelRejectedError(
            f"{field} is not a readable .npy array: {exc}",
            where=str(path),
            hint="save it with numpy.save (no pickled objects)",
        ) from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ModelRejectedError(
            f"{field} holds {getattr(array, 'dtype', type(array))}, not numbers",
            where=str(path),
            hint="save a float32 array with numpy.save",
        )
    return array.astype(np.float32)


def check_reference(model: LoadedModel, folder: Path) -> float | None:
    """Run the shipped reference inputs on the target backend; refuse beyond the tolerance.

    Returns the largest deviation seen, or None when the version ships no reference.
    """
    manifest = model.manifest
    source: Precision = "fp32" if model.precision == "fp16" else model.precision
    variant = manifest.variants.get(source)
    if manifest.reference_input is None or variant is None or variant.reference_output is None:
        return None
    inputs = load_array(folder, manifest.reference_input, "reference_input")
    expected = load_array(folder, variant.reference_output, f"variants.{source}.reference_output")
    atol = variant.atol * (10 if model.precision == "fp16" else 1)
    got = probabilities(model, inputs, folder)
    if got.shape != expected.shape:
        raise ModelRejectedError(
            f"the model's outputs for the reference inputs have shape {list(got.shape)}, the "
            f"reference outputs {list(expected.shape)} (the manifest lists "
            f"{len(manifest.labels)} labels)",
            where=str(folder),
            hint="make labels, the model and its reference files agree; re-record the "
            "reference outputs after re-exporting",
        )
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
