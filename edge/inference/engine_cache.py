"""Where a TensorRT plan is cached, keyed so that a plan never runs on the wrong GPU or model.

A plan is valid for one GPU model and compute capability, one TensorRT version, one model file
and one precision; the key holds all five, so a changed part simply misses the cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineKey:
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    model_sha256: str
    precision: str

    def file_name(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower()
        parts = (
            gpu,
            f"sm{self.compute_capability.replace('.', '')}",
            f"trt{self.tensorrt_version}",
            self.model_sha256[:16],
            self.precision,
        )
        return "_".join(parts) + ".plan"

    def path_in(self, cache_dir: Path) -> Path:
        return cache_dir / self.file_name()
