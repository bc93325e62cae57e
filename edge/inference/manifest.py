"""A model version's manifest: what the file is, how to feed it, what its outputs mean."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import ModelRejectedError
from edge.files import load_data_file

MANIFEST_FILE = "manifest.json"
Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str
    shape: list[int] = Field(min_length=4, max_length=4, description="-1 for a dynamic batch")
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    color: Literal["grayscale", "rgb"]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def height_width(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]


class Normalization(_Strict):
    scale: float = Field(gt=0, description="multiplies the 0..255 pixel values first")
    mean: list[float]
    std: list[float]


class OutputSpec(_Strict):
    name: str
    kind: Literal["logits", "probabilities"]


class Variant(_Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.onnx$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    accuracy: float | None = Field(None, ge=0, le=1, description="on the held-out set")
    reference_output: str | None = None
    atol: float = Field(1e-4, gt=0, description="tolerance on reference probabilities")


class ModelManifest(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    input: InputSpec
    normalization: Normalization
    output: OutputSpec
    labels: list[str] = Field(min_length=2)
    ok_label: str
    thresholds: dict[str, float] = Field(default_factory=dict)
    reference_input: str | None = None
    variants: dict[Precision, Variant] = Field(min_length=1)
    accuracy_tolerance: float = Field(
        0.01, ge=0, le=1, description="how much accuracy a faster variant may lose"
    )
    held_out: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _labels_fit(self) -> ModelManifest:
        if self.ok_label not in self.labels:
            raise ValueError(f"ok_label {self.ok_label!r} is not one of the labels")
        unknown = set(self.thresholds) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds name unknown labels: {sorted(unknown)}")
        if len(self.normalization.mean) not in (1, self.input.channels):
            raise ValueError("normalization.mean needs one value or one per channel")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def load_manifest(folder: Path) -> ModelManifest:
    return load_data_file(
        folder / MANIFEST_FILE,
        ModelManifest,
        error=ModelRejectedError,
        what=MANIFEST_FILE,
        hint="compare it with models/defect/1/manifest.json",
        missing_hint="a model version is a folder with manifest.json and its .onnx file(s)",
        syntax_hint="regenerate it with the model's export script",
    )
