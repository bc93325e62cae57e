"""``moltbot image jetson-bundle``: a flash bundle that installs the appliance INTO NVIDIA's own
root file system.

NVIDIA's licence forbids shipping the kernel, boot chain, CUDA, cuDNN and TensorRT, and
JetPack's TensorRT Python bindings exist only for the Ubuntu Python of the release (3.10 on
JetPack 6, 3.8 on JetPack 5). So the bundle does not replace the BSP's ``rootfs/``: it carries

- ``appliance-overlay.tar.zst``: config, units (enabled), SSH/sudo policy, data dir + models;
- ``wheelhouse/``: this repo's wheel and every dependency, resolved here for the JetPack's Python
  on aarch64 and checked by their tags (:mod:`images.jetson_wheelhouse`);
- ``install-appliance.sh``: run by ``flash.sh`` after ``apply_binaries.sh``; inside the sample
  root file system it installs the JetPack runtime packages and makes the venv on the system
  Python with ``--system-site-packages``;
- RAUC's configuration for NVIDIA's rootfs A/B, in the overlay: ``/etc/rauc/system.conf``
  (``bootloader=custom``, slots APP/APP_b), the ``nvbootctrl`` backend script and the keyring
  (the update CA certificate only; :mod:`images.jetson_overlay`). ``flash.sh --rootfs-ab``
  flashes with NVIDIA's ``ROOTFS_AB=1``;
- ``flash.sh``, ``bundle.env`` (what the recipe expects of the BSP and board), ``manifest.json``
  (with the JetPack, CUDA, cuDNN and TensorRT versions targeted), SBOM, ``SHA256SUMS``, README.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from edge import __version__
from edge.board import BoardProfile
from edge.files import sha256_file
from images.build import BuildReport, clamp_times, start_build, tree_digest, update_signing
from images.jetson_overlay import build_overlay
from images.jetson_target import JetPackTarget, PythonTarget, target_for
from images.jetson_wheelhouse import build_wheelhouse, install_requirement
from images.outputs import Component, build_manifest, cyclonedx_sbom, models
from images.rootfs import APP_UID, APP_USER
from images.run import ToolError, run
from images.system_files import DATA_MOUNT
from images.tree_sizes import tree_bytes
from images.update_bundle import compatible_for

JETSON_FILES = Path(__file__).with_name("jetson")
FLASH_SCRIPT = Path(__file__).with_name("jetson_flash.sh")
INSTALL_SCRIPT = JETSON_FILES / "install-appliance.sh"
# NVIDIA's eMMC layout keeps boot, recovery and firmware partitions beside APP (the rootfs).
NVIDIA_RESERVED_MIB = 3072
OVERLAY_TARBALL = "appliance-overlay.tar.zst"
WHEELHOUSE = "wheelhouse"
# What the JetPack runtime packages add to the sample rootfs (CUDA runtime, cuDNN, TensorRT):
# an estimate for the fit check, from their installed sizes on JetPack 6.
JETPACK_PACKAGES_MIB = 3072
# Units the sample rootfs brings that the appliance wants on (the overlay enables its own).
SYSTEM_UNITS = ("ssh.service",)


def bundle_env(
    name: str,
    board: BoardProfile,
    target: JetPackTarget,
    app_mib: int,
    data_mib: int,
    models_mib: int,
    admins: tuple[str, ...] = ("admin",),
    python: PythonTarget | None = None,
) -> str:
    if board.l4t is None or board.storage_gb is None:
        raise ToolError(
            f"board {board.name} has no l4t/storage_gb in its profile",
            where=f"hw/{board.name}.yaml",
            hint="Jetson profiles name their Jetson Linux release, board config and eMMC size",
        )
    values = {
        "BUNDLE_NAME": name,
        "BOARD": board.name,
        "BOARD_CONFIG": board.l4t.board_config,
        "ROOT_DEVICE": board.l4t.root_device,
        "L4T_RELEASE": str(board.l4t.release),
        "L4T_VERSION": target.l4t_release,
        "JETPACK": target.jetpack,
        "UBUNTU": target.ubuntu,
        "SYSTEM_PYTHON": f"python{(python or target.python_target).version}",
        "JETPACK_PACKAGES": " ".join(target.packages),
        "APT_SOURCES": "; ".join(target.apt_sources),
        "APP_REQUIREMENT": f"{install_requirement()}=={__version__}",
        "APP_USER": APP_USER,
        "APP_UID": str(APP_UID),
        "ADMIN_USERS": " ".join(admins),
        "ENABLED_UNITS": " ".join(SYSTEM_UNITS),
        "RECOVERY_USB_IDS": " ".join(board.l4t.recovery_usb_ids),
        "STORAGE_GB": str(board.storage_gb),
        "NVIDIA_RESERVED_MIB": str(NVIDIA_RESERVED_MIB),
        "OVERLAY_TARBALL": OVERLAY_TARBALL,
        "APP_MIB": str(app_mib),
        "JETPACK_PACKAGES_MIB": str(JETPACK_PACKAGES_MIB),
        "DATA_MIB": str(data_mib),
        "MODELS_MIB": str(models_mib),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def bundle_readme(board: BoardProfile, target: JetPackTarget, compatible: str) -> str:
    assert board.l4t is not None  # noqa: S101 - checked by bundle_env first
    return f"""# Moltbot Edge flash bundle for {board.description}

Made for Jetson Linux R{target.l4t_release} (JetPack {target.jetpack}: Ubuntu {target.ubuntu},
Python {target.python}, CUDA {target.cuda}, cuDNN {target.cudnn}, TensorRT {target.tensorrt}).

You need NVIDIA's Jetson Linux R{target.l4t_release} BSP for this board and its sample root
file system, unpacked on an x86_64 Ubuntu host with `qemu-user-static` (NVIDIA's licence does
not let us ship them):

    tar xf Jetson_Linux_R{target.l4t_release}*_aarch64.tbz2
    sudo tar xpf Tegra_Linux_Sample-Root-Filesystem_R{target.l4t_release}*_aarch64.tbz2 \\
        -C Linux_for_Tegra/rootfs/

1. Put the board in recovery mode (USB-C flashing port to this host; hold REC, press RESET,
   release REC). `lsusb` shows NVIDIA `{" or ".join(board.l4t.recovery_usb_ids)}`.
2. `./flash.sh /path/to/Linux_for_Tegra --check-only` checks the BSP's files and release, that
   `rootfs/` holds the Ubuntu {target.ubuntu} sample root file system, the board on USB, free
   space and that everything fits the {board.storage_gb} GB eMMC.
3. `sudo ./flash.sh /path/to/Linux_for_Tegra` runs `apply_binaries.sh`, then
   `install-appliance.sh` (inside `rootfs/`: JetPack's CUDA runtime, cuDNN, TensorRT and its
   Python bindings from NVIDIA's apt repository — the host needs internet — and the
   application in a venv on the system Python from `wheelhouse/`), then
   `tools/kernel_flash/l4t_initrd_flash.sh {board.l4t.board_config} {board.l4t.root_device}`.
   Each run writes `flash-<time>.log` here; a failed USB flash is safe to re-run.

On first boot the appliance builds its TensorRT engines for this GPU and caches them under
/var/lib/moltbot/engines. `moltbot doctor` says which of CUDA, cuDNN, TensorRT and its Python
bindings it found.

## A/B updates (NVIDIA's rootfs A/B + RAUC)

`sudo ./flash.sh /path/to/Linux_for_Tegra --rootfs-ab` flashes with NVIDIA's rootfs A/B layout:
it runs `sudo ROOTFS_AB=1 tools/kernel_flash/l4t_initrd_flash.sh {board.l4t.board_config}
{board.l4t.root_device}`, which makes two root partitions, APP (slot A, nvbootctrl rootfs slot
0) and APP_b (slot B, slot 1); UEFI boots the active one and falls back to the other after
failed boots. `sudo nvbootctrl -t rootfs dump-slots-info` on the board shows both.

The appliance carries RAUC's configuration for it: `/etc/rauc/system.conf` (compatible
`{compatible}`, `bootloader=custom`), `/usr/lib/moltbot/rauc-nvbootctrl-backend` (RAUC's
get/set-primary, get/set-state and get-current as `nvbootctrl -t rootfs` calls) and
`/etc/rauc/keyring.pem` (the update CA certificate; no private key is in this bundle). An update
is the ext4 image of a root file system signed into a bundle on the build host
(`moltbot image bundle ROOTFS.ext4 --keys KEYS --compatible {compatible} --version V --out
update.raucb`); on the board `rauc install update.raucb` writes it into the slot that is not
running and makes that slot active; after the reboot the appliance's health gate marks it good
(`nvbootctrl -t rootfs mark-boot-successful`) or the board returns to the old slot.

Not tried on a Jetson: NVIDIA's A/B flash, nvbootctrl and RAUC on the board were not run where
this bundle was made (see the project's README).
"""


def _wheel_components(wheelhouse: Path) -> list[Component]:
    found = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found.append(Component("wheel", name, version, sha256_file(wheel)))
    return found


def build_jetson_bundle(
    recipe_path: Path,
    out_dir: Path,
    cache_dir: Path,
    *,
    python: PythonTarget | None = None,
    update_keys: Path | None = None,
) -> BuildReport:
    """The bundle for ``recipe_path`` under ``out_dir/<recipe name>``. ``python`` overrides the
    JetPack's own Python (tests install into a stand-in root file system with another one).
    ``update_keys`` holds the CA certificate the device's RAUC trusts (default: the development
    keys under the cache, as for Pi images)."""
    recipe, board, digest, epoch = start_build(
        recipe_path, "emmc", "Raspberry Pi recipes build SD-card images: moltbot image build"
    )
    target = target_for(board)
    python = python or target.python_target
    keyring = update_signing(update_keys, cache_dir).keyring
    compatible = compatible_for(board.name, recipe.name)
    bundle = out_dir / recipe.name
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    tarball = bundle / OVERLAY_TARBALL
    report = BuildReport(tarball, digest)
    with report.stage(f"wheelhouse for Python {python.version} (aarch64)"):
        build_wheelhouse(python, cache_dir, bundle / WHEELHOUSE)
    work = cache_dir / "work" / recipe.name
    with report.stage("appliance overlay: config, units, models"):
        tree, data = build_overlay(
            recipe, board, cache_dir, work / "overlay", compatible=compatible, keyring=keyring
        )
        clamp_times(tree, epoch)
        report.tree_sha256["overlay"] = tree_digest(tree)
    with report.stage("overlay tarball and flash bundle"):
        _pack(tree, tarball, epoch)
        models_bytes = tree_bytes(data / "models")
        data_bytes = tree_bytes(data) - models_bytes
        wheels_bytes = tree_bytes(bundle / WHEELHOUSE)
        # An installed venv takes about three times its wheels.
        app_bytes = tree_bytes(tree) - tree_bytes(tree / DATA_MOUNT) + 3 * wheels_bytes
        components = [*_wheel_components(bundle / WHEELHOUSE), *models(data / "models")]
        manifest = build_manifest(digest, components, tarball, epoch)
        manifest["board"] = board.name
        manifest["tree_sha256"] = report.tree_sha256
        manifest["l4t_release"] = board.l4t.release if board.l4t else None
        manifest["jetpack"] = target.versions()
        manifest["python_target"] = {"version": python.version, "glibc": python.glibc}
        manifest["rauc"] = {
            "compatible": compatible,
            "bootloader": "custom (nvbootctrl, NVIDIA rootfs A/B)",
            "keyring_sha256": sha256_file(keyring),
        }
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (bundle / "sbom.cdx.json").write_text(
            json.dumps(cyclonedx_sbom(manifest, digest), indent=2)
        )
        mib = 2**20
        admins = tuple(user.name for user in recipe.users) or ("admin",)
        (bundle / "bundle.env").write_text(
            bundle_env(
                recipe.name,
                board,
                target,
                -(-app_bytes // mib),
                max(-(-data_bytes // mib), recipe.partitions.data_mib or board.partitions.data_mib),
                -(-models_bytes // mib),
                admins,
                python,
            )
        )
        for script, name in ((FLASH_SCRIPT, "flash.sh"), (INSTALL_SCRIPT, "install-appliance.sh")):
            shutil.copy2(script, bundle / name)
            (bundle / name).chmod(0o755)
        (bundle / "README.md").write_text(bundle_readme(board, target, compatible))
        _write_sums(bundle)
    report.sizes_bytes["overlay_tarball"] = tarball.stat().st_size
    report.sizes_bytes["wheelhouse"] = wheels_bytes
    (bundle / "build-report.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return report


def _pack(tree: Path, tarball: Path, epoch: int) -> None:
    partial = tarball.with_name(tarball.name + ".partial")
    run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--sort=name",
            f"--mtime=@{epoch}",
            "--clamp-mtime",
            "-I",
            "zstd -T0 -10",
            "-cpf",
            partial,
            "-C",
            tree,
            ".",
        ],
        step="pack the appliance overlay",
    )
    partial.replace(tarball)


def _write_sums(bundle: Path) -> None:
    """SHA256SUMS over everything flash.sh and install-appliance.sh use."""
    files = [
        bundle / OVERLAY_TARBALL,
        bundle / "manifest.json",
        bundle / "sbom.cdx.json",
        bundle / "bundle.env",
        bundle / "install-appliance.sh",
        *sorted((bundle / WHEELHOUSE).glob("*.whl")),
    ]
    (bundle / "SHA256SUMS").write_text(
        "".join(f"{sha256_file(path)}  {path.relative_to(bundle)}\n" for path in files)
    )
