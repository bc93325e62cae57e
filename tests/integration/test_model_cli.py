"""``moltbot model …`` and ``moltbot infer`` as a technician runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.models import SHIPPED_DEFECT_MODEL, copy_version, write_frames

pytestmark = pytest.mark.integration


def moltbot(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    env |= {"MOLTBOT_DEVICE__DATA_DIR": str(data_dir), "MOLTBOT_DEVICE__ID": "bench-1"}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_install_activate_rollback_and_infer(data_dir: Path, tmp_path: Path) -> None:
    installed = moltbot(data_dir, "model", "install", str(SHIPPED_DEFECT_MODEL), "--activate")
    assert "active: defect@1" in installed.stdout, installed.stderr
    copy_version(data_dir / "models", "2")
    assert "active: defect@2" in moltbot(data_dir, "model", "activate", "defect@2").stdout
    listing = moltbot(data_dir, "model", "list").stdout
    assert "* defect@2" in listing
    assert "active: defect@1" in moltbot(data_dir, "model", "rollback", "defect").stdout
    frames = write_frames(tmp_path / "frames", per_label=1, seed=4)
    result = moltbot(data_dir, "infer", str(frames["spot"][0]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] == "spot"


def test_verify_refuses_a_corrupt_model_with_exit_2(data_dir: Path, tmp_path: Path) -> None:
    bad = copy_version(tmp_path / "src", "9")
    (bad / "model.int8.onnx").write_bytes(b"garbage")
    result = moltbot(data_dir, "model", "verify", str(bad))
    assert result.returncode == 2
    assert "sha256 mismatch" in result.stderr
    assert "model.int8.onnx" in result.stderr
    good = moltbot(data_dir, "model", "verify", str(SHIPPED_DEFECT_MODEL))
    assert good.returncode == 0, good.stderr
    assert "reference deviation" in good.stdout


def test_quantize_reports_size_and_accuracy_before_and_after(
    data_dir: Path, tmp_path: Path
) -> None:
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for paths in write_frames(tmp_path / "cal-src", per_label=16, seed=21).values():
        for path in paths:
            path.rename(calibration / f"{path.parent.name}-{path.name}")
    write_frames(tmp_path / "held-out", per_label=50, seed=22)
    out = tmp_path / "defect-q" / "defect" / "5"
    result = moltbot(
        data_dir,
        "model",
        "quantize",
        str(SHIPPED_DEFECT_MODEL),
        "--calibration",
        str(calibration),
        "--held-out",
        str(tmp_path / "held-out"),
        "--out",
        str(out),
        "--version",
        "5",
    )
    assert result.returncode == 0, result.stderr
    sizes = next(line for line in result.stdout.splitlines() if line.startswith("size:"))
    accuracy_line = next(line for line in result.stdout.splitlines() if "accuracy" in line)
    fp32, int8 = (float(v) for v in accuracy_line.split()[1::3][:2])
    assert fp32 - int8 <= 0.01, accuracy_line
    assert "int8" in sizes
    assert moltbot(data_dir, "model", "verify", str(out)).returncode == 0
