"""The small interface every inference backend implements: load a model, run a batch, describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge.inference.manifest import ModelManifest, Precision


class LoadedModel(Protocol):
    """A model ready to serve on one backend. ``run`` is safe to call from several threads."""

    manifest: ModelManifest
    precision: Precision
    backend: str

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, C, H, W) inputs → (N, classes) raw outputs (logits or probabilities)."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def precisions(self) -> tuple[Precision, ...]:
        """The manifest variants this backend can run, in order of preference."""
        ...

    def load(self, folder: Path, manifest: ModelManifest, precision: Precision) -> LoadedModel: ...
