"""``moltbot image jetson-bundle``: a Jetson AGX root file system + flash bundle.

The same rootfs machinery as the Pi (Debian arm64, the application venv, models, units,
first-boot setup, no password), without a kernel: the kernel, boot chain, CUDA and TensorRT
come from the user's own Linux_for_Tegra BSP at flash time (NVIDIA's licence forbids shipping
them). The bundle holds the rootfs tarball, manifest + SBOM, SHA256SUMS, ``bundle.env`` (what
the recipe expects of the BSP and the board) and ``flash.sh``, which checks everything before it
runs NVIDIA's ``apply_binaries.sh`` and ``l4t_initrd_flash.sh``.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from edge.board import BoardProfile
from images.build import (
    BuildReport,
    clamp_times,
    prepare_tree,
    start_build,
    tree_digest,
)
from images.outputs import build_manifest, cyclonedx_sbom
from images.run import ToolError, run
from images.system_files import DATA_MOUNT
from images.tree_sizes import tree_bytes

FLASH_SCRIPT = Path(__file__).with_name("jetson_flash.sh")
# NVIDIA's eMMC layout keeps boot, recovery and firmware partitions beside APP (the rootfs).
NVIDIA_RESERVED_MIB = 3072
ROOTFS_TARBALL = "rootfs.tar.zst"


def bundle_env(
    name: str, board: BoardProfile, rootfs_mib: int, data_mib: int, models_mib: int
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
        "JETPACK": board.l4t.jetpack,
        "RECOVERY_USB_IDS": " ".join(board.l4t.recovery_usb_ids),
        "STORAGE_GB": str(board.storage_gb),
        "NVIDIA_RESERVED_MIB": str(NVIDIA_RESERVED_MIB),
        "ROOTFS_TARBALL": ROOTFS_TARBALL,
        "ROOTFS_MIB": str(rootfs_mib),
        "DATA_MIB": str(data_mib),
        "MODELS_MIB": str(models_mib),
        "NEEDED_MIB": str(rootfs_mib + data_mib + models_mib),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def bundle_readme(board: BoardProfile) -> str:
    assert board.l4t is not None  # noqa: S101 - checked by bundle_env first
    return f"""# Moltbot Edge flash bundle for {board.description}

You need NVIDIA's Jetson Linux R{board.l4t.release} BSP (JetPack {board.l4t.jetpack}) for this
board, unpacked on an x86_64 Ubuntu/Debian host: its `Linux_for_Tegra` folder. NVIDIA's
licence does not let us ship it; CUDA, TensorRT and the kernel come from it.

1. Put the board in recovery mode (USB-C flashing port to this host; hold REC, press RESET,
   release REC). `lsusb` shows NVIDIA `{" or ".join(board.l4t.recovery_usb_ids)}`.
2. `./flash.sh /path/to/Linux_for_Tegra --check-only` checks the BSP's files and release, the
   board on USB, free space and that everything fits the {board.storage_gb} GB eMMC.
3. `sudo ./flash.sh /path/to/Linux_for_Tegra` replaces the BSP's `rootfs/` with ours, runs
   `apply_binaries.sh`, then `tools/kernel_flash/l4t_initrd_flash.sh {board.l4t.board_config}
   {board.l4t.root_device}`. Each run writes `flash-<time>.log` here; a failed USB flash is
   safe to re-run.

On first boot the appliance builds its TensorRT engines for this GPU and caches them under
/var/lib/moltbot (the data dir lives on the eMMC's APP partition).
"""


def build_jetson_bundle(recipe_path: Path, out_dir: Path, cache_dir: Path) -> BuildReport:
    recipe, board, digest, epoch = start_build(
        recipe_path, "emmc", "Raspberry Pi recipes build SD-card images: moltbot image build"
    )
    bundle = out_dir / recipe.name
    bundle.mkdir(parents=True, exist_ok=True)
    tarball = bundle / ROOTFS_TARBALL
    report = BuildReport(tarball, digest)
    work = cache_dir / "work" / recipe.name
    tree = prepare_tree(recipe, board, None, cache_dir, work, report, epoch)
    with report.stage("rootfs tarball and flash bundle"):
        clamp_times(tree.root, epoch)
        report.tree_sha256["root"] = tree_digest(tree.root)
        models_bytes = tree_bytes(tree.data / "models")
        data_bytes = tree_bytes(tree.data) - models_bytes
        rootfs_bytes = tree_bytes(tree.root) - tree_bytes(tree.root / DATA_MOUNT)
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
                tree.root,
                ".",
            ],
            step="pack the root file system",
        )
        partial.replace(tarball)
        manifest = build_manifest(digest, tree.components, tarball, epoch)
        manifest["board"] = board.name
        manifest["tree_sha256"] = report.tree_sha256
        manifest["l4t_release"] = board.l4t.release if board.l4t else None
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (bundle / "sbom.cdx.json").write_text(
            json.dumps(cyclonedx_sbom(manifest, digest), indent=2)
        )
        mib = 2**20
        (bundle / "bundle.env").write_text(
            bundle_env(
                recipe.name,
                board,
                -(-rootfs_bytes // mib),
                max(-(-data_bytes // mib), recipe.partitions.data_mib or board.partitions.data_mib),
                -(-models_bytes // mib),
            )
        )
        shutil.copy2(FLASH_SCRIPT, bundle / "flash.sh")
        (bundle / "flash.sh").chmod(0o755)
        (bundle / "README.md").write_text(bundle_readme(board))
        from edge.files import sha256_file  # noqa: PLC0415

        files = [tarball, bundle / "manifest.json", bundle / "sbom.cdx.json", bundle / "bundle.env"]
        (bundle / "SHA256SUMS").write_text(
            "".join(f"{sha256_file(path)}  {path.name}\n" for path in files)
        )
    report.sizes_bytes["rootfs_tarball"] = tarball.stat().st_size
    (bundle / "build-report.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return report
