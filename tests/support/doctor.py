"""A Raspberry Pi 4 as ``moltbot doctor`` sees it (device tree, cpuinfo) under a test root, and
a model file where doctor looks for one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PI_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"


def make_pi_root(root: Path) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    (root / "proc/cpuinfo").write_text(PI_CPUINFO)
    return root


def install_model(data_dir: Path, name: str = "defect") -> Path:
    model = data_dir / "models" / name / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"not really onnx, but doctor only hashes it")
    return model


def checks_by_name(report: Any) -> dict[str, Any]:
    return {check.name: check for check in report.checks}
