"""Model verification and the registry: bad models are refused and the good one keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.config.model import InferenceSettings
from edge.errors import ModelRejectedError
from edge.inference.registry import ModelRegistry
from edge.inference.service import InferenceService
from edge.inference.verification import verify_folder
from tests.support.models import SHIPPED_DEFECT_MODEL, copy_version, installed_registry, reseal


def service(registry: ModelRegistry, tmp_path: Path) -> InferenceService:
    return InferenceService(
        InferenceSettings(precision="fp32"), registry, ["ort-cpu"], tmp_path / "engines"
    )


def test_the_shipped_model_verifies() -> None:
    manifest = verify_folder(SHIPPED_DEFECT_MODEL)
    assert manifest.ref == "defect@1"
    assert set(manifest.variants) == {"fp32", "int8"}
    assert (SHIPPED_DEFECT_MODEL / "model.onnx").stat().st_size < 5 * 1024 * 1024


def test_corrupt_file_is_refused_naming_file_and_reason(tmp_path: Path) -> None:
    bad = copy_version(tmp_path / "src", "2")
    model = bad / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    with pytest.raises(ModelRejectedError, match="sha256 mismatch") as caught:
        verify_folder(bad)
    assert caught.value.where == str(model)
    reseal(bad)  # right hash, still truncated: the ONNX check catches it
    with pytest.raises(ModelRejectedError, match="not a valid ONNX model"):
        verify_folder(bad)


def test_text_file_named_onnx_is_refused(tmp_path: Path) -> None:
    bad = copy_version(tmp_path / "src", "2")
    (bad / "model.onnx").write_text("this is not a model\n")
    reseal(bad)
    with pytest.raises(ModelRejectedError, match="not a valid ONNX model") as caught:
        verify_folder(bad)
    assert str(bad / "model.onnx") == caught.value.where


def test_wrong_input_shape_in_manifest_is_refused(tmp_path: Path) -> None:
    manifest = json.loads((SHIPPED_DEFECT_MODEL / "manifest.json").read_text())
    manifest["input"]["shape"] = [-1, 3, 224, 224]
    manifest["input"]["color"] = "rgb"
    manifest["normalization"]["mean"] = [0.5]
    bad = copy_version(tmp_path / "src", "2", edit={"input": manifest["input"]})
    with pytest.raises(ModelRejectedError, match=r"has shape \[-1, 1, 64, 64\]"):
        verify_folder(bad)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    bad = copy_version(tmp_path / "src", "2")
    (bad / "manifest.json").unlink()
    with pytest.raises(ModelRejectedError, match=r"no manifest\.json"):
        verify_folder(bad)


def test_refused_activation_keeps_the_old_model_serving(tmp_path: Path) -> None:
    registry = installed_registry(tmp_path / "models")
    serving = service(registry, tmp_path)
    serving.start()
    bad = copy_version(tmp_path / "models", "2")
    (bad / "model.onnx").write_bytes(b"\0" * 100)
    with pytest.raises(ModelRejectedError, match="sha256 mismatch"):
        serving.activate("defect@2")
    assert serving.current.loaded.manifest.ref == "defect@1"
    frame = np.zeros((1, 1, 64, 64), dtype=np.float32)
    assert serving.infer_tensor(frame)[0].model == "defect@1"
    assert registry.active("defect") is None  # nothing was persisted


def test_reference_outputs_that_differ_refuse_the_version(tmp_path: Path) -> None:
    registry = installed_registry(tmp_path / "models")
    drifted = copy_version(tmp_path / "models", "2")
    expected = np.load(drifted / "reference" / "fp32.npy")
    np.save(drifted / "reference" / "fp32.npy", np.roll(expected, 1, axis=1))
    serving = service(registry, tmp_path)
    serving.activate("defect@1")
    with pytest.raises(ModelRejectedError, match="reference outputs differ"):
        serving.activate("defect@2")
    assert serving.current.loaded.manifest.ref == "defect@1"


def test_activate_and_rollback_move_the_pointers(tmp_path: Path) -> None:
    registry = installed_registry(tmp_path / "models")
    copy_version(tmp_path / "models", "2")
    serving = service(registry, tmp_path)
    serving.activate("defect@1")
    serving.activate("defect@2")
    assert (registry.active("defect"), registry.previous("defect")) == ("2", "1")
    serving.rollback("defect")
    assert serving.current.loaded.manifest.ref == "defect@1"
    assert registry.active("defect") == "1"


def test_rollback_without_history_is_a_clear_error(tmp_path: Path) -> None:
    serving = service(installed_registry(tmp_path / "models"), tmp_path)
    with pytest.raises(ModelRejectedError, match="no previous version"):
        serving.rollback("defect")


def test_installing_a_different_model_under_an_existing_version_is_refused(
    tmp_path: Path,
) -> None:
    registry = installed_registry(tmp_path / "models")
    registry.install(SHIPPED_DEFECT_MODEL)  # the same again: fine
    changed = copy_version(tmp_path / "src", "1", edit={"description": "retrained"})
    with pytest.raises(ModelRejectedError, match="already installed with different contents"):
        registry.install(changed)


def test_unknown_model_names_how_to_install_one(tmp_path: Path) -> None:
    with pytest.raises(ModelRejectedError, match="moltbot model install"):
        service(ModelRegistry(tmp_path / "empty"), tmp_path).start()
