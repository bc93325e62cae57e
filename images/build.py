"""``moltbot image build``: recipe → rootfs (cached) → application → partitions → outputs.

Each stage logs its start and its time; the times go into ``build-report.json`` beside the image.
Everything that can be checked without the slow steps (recipe, models, tools, root) is checked
first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge import __version__ as edge_version
from edge.board import BoardProfile
from edge.files import sha256_file
from edge.inference.registry import ModelRegistry
from images import vosk_source
from images.ab_slots import SlotSettings, install_boot_partition_files, install_slot_files
from images.app import install_application
from images.boot_path import BootPathReport, check_image
from images.disk import DiskLayout, assemble, build_ext4, build_vfat, plan_layout
from images.outputs import (
    DEFAULT_XZ_LEVEL,
    Component,
    build_manifest,
    debian_packages,
    models,
    wheels,
    write_outputs,
)
from images.paths import REPO_ROOT
from images.recipe import Recipe, load_recipe, recipe_hash
from images.rootfs import (
    APP_UID,
    AdminUser,
    RootfsSpec,
    build_rootfs,
    extract_rootfs,
)
from images.run import ToolError, require
from images.slimming import SlimOptions, slim_rootfs
from images.system_files import (
    BOOT_MOUNT,
    DATA_MOUNT,
    VOSK_DIR,
    SystemSettings,
    boot_files,
    install_system_files,
)
from images.tree_sizes import largest_directories, tree_bytes
from images.update_bundle import compatible_for, create_bundle
from images.update_keys import KEYRING_NAME, SigningFiles, init_keys, signing_files

logger = logging.getLogger(__name__)
DEFAULT_ADMIN = "admin"
HOST_TOOLS = ("mmdebstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "bmaptool", "xz", "faketime")


@dataclass
class BuildReport:
    image: Path
    recipe_sha256: str
    rootfs_cached: bool = False
    stages_s: dict[str, float] = field(default_factory=dict)
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    largest_directories: dict[str, dict[str, int]] = field(default_factory=dict)
    tree_sha256: dict[str, str] = field(default_factory=dict)
    boot_path: list[BootPathReport] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("▶ %s", name)
        started = time.monotonic()
        yield
        self.stages_s[name] = round(time.monotonic() - started, 1)
        logger.info("✔ %s (%.1f s)", name, self.stages_s[name])

    def as_json(self) -> dict[str, object]:
        return {
            "image": self.image.name,
            "recipe_sha256": self.recipe_sha256,
            "rootfs_cached": self.rootfs_cached,
            "stages_s": self.stages_s,
            "total_s": round(sum(self.stages_s.values()), 1),
            "sizes_bytes": self.sizes_bytes,
            "largest_directories_bytes": self.largest_directories,
            "tree_sha256": self.tree_sha256,
            "boot_path": [checked.as_json() for checked in self.boot_path],
        }


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time (same inputs → same timestamps)."""
    configured = os.environ.get("SOURCE_DATE_EPOCH", "")
    if configured.isdigit():
        return int(configured)
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return int(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return int(time.time())


def admins(recipe: Recipe) -> tuple[AdminUser, ...]:
    users = [AdminUser(u.name, tuple(u.ssh_keys)) for u in recipe.users]
    return tuple(users) or (AdminUser(DEFAULT_ADMIN),)


def rootfs_spec(recipe: Recipe, boot_medium: str, root_partuuid: str, epoch: int) -> RootfsSpec:
    mirror = recipe.base.mirror
    if recipe.base.snapshot:
        mirror = f"http://snapshot.debian.org/archive/debian/{recipe.base.snapshot}"
    return RootfsSpec(
        suite=recipe.base.suite,
        mirror=mirror,
        components=tuple(recipe.base.components),
        packages=tuple(recipe.packages),
        boot_medium=boot_medium,
        root_partuuid=root_partuuid,
        admins=admins(recipe),
        source_date_epoch=epoch if recipe.base.snapshot else None,
    )


def bundle_version(epoch: int) -> str:
    """The update's version: the application's, then the build time (SOURCE_DATE_EPOCH), so two
    builds of one release tell apart and sort in build order."""
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%S")
    return f"{edge_version}+{stamp}"


def write_bundle(
    root_part: Path, out: Path, compatible: str, signing: SigningFiles, epoch: int, digest: str
) -> int:
    """The signed RAUC bundle of the root file system just built; returns its size."""
    built = create_bundle(
        root_part,
        out=out,
        compatible=compatible,
        version=bundle_version(epoch),
        signing=signing,
        build_id=digest[:16],
    )
    return built.size_bytes


def update_signing(directory: Path | None, cache_dir: Path) -> SigningFiles:
    """The keys given, or the development set under the cache (made on first use)."""
    if directory is not None:
        return signing_files(directory)
    development = cache_dir / "update-keys"
    if (development / KEYRING_NAME).is_file():
        return signing_files(development)
    logger.warning(
        "no --update-keys given: making DEVELOPMENT update keys in %s; devices flashed with "
        "this image trust only bundles signed by them (use the plant's PKI for production: "
        "moltbot image keys init --help)",
        development,
    )
    return init_keys(development).signing


def require_update_tools(*, bundle: bool) -> None:
    for tool in ("mkimage", "openssl", *(("rauc", "mksquashfs") if bundle else ())):
        require(tool)


def slim_options(recipe: Recipe, board: BoardProfile) -> SlimOptions:
    return SlimOptions(
        docs=recipe.slim.docs,
        locales=recipe.slim.locales,
        kernel_modules=recipe.slim.kernel_modules,
        unused_module_dirs=tuple(board.kernel_modules_unused),
    )


def layout_for(recipe: Recipe, digest: str, sizes: object) -> DiskLayout:
    return plan_layout(
        digest,
        recipe.partitions.boot_mib or sizes.boot_mib,  # type: ignore[attr-defined]
        recipe.partitions.root_mib or sizes.root_mib,  # type: ignore[attr-defined]
        recipe.partitions.data_mib or sizes.data_mib,  # type: ignore[attr-defined]
    )


def preflight() -> None:
    for tool in HOST_TOOLS:
        require(tool)
    if os.geteuid() != 0:
        raise ToolError(
            "building an image needs root (it unpacks a root file system with its owners)",
            where="moltbot image build",
            hint="run it as root, e.g. `sudo make image`",
        )


def stage_data(recipe: Recipe, data: Path, base_dir: Path, cache_dir: Path) -> None:
    """Models (registered and active) and the Vosk model: the data partition's first content."""
    registry = ModelRegistry(data / "models")
    for ref in recipe.models:
        manifest = registry.install(base_dir / ref.path)
        if registry.active(manifest.name) is None:
            registry.set_active(manifest.name, manifest.version)
    if recipe.vosk_model:
        vosk = recipe.vosk_model
        source = vosk_source.resolve(
            vosk.path, vosk.url, vosk.sha256, vosk.package, base_dir=base_dir, cache_dir=cache_dir
        )
        vosk_source.install(source, data / VOSK_DIR, grammar_only=vosk.grammar_only)
    (data / "incoming").mkdir(exist_ok=True)


def check_fits(name: str, folder: Path, size_mib: int) -> int:
    used = tree_bytes(folder)
    # ext4 metadata, journal and inode tables take roughly a tenth.
    if used * 1.15 > size_mib * 2**20:
        raise ToolError(
            f"the {name} partition ({size_mib} MiB) is too small for its "
            f"{used / 2**20:.0f} MiB of files",
            where=f"partitions.{name}_mib",
            hint=f"set partitions.{name}_mib in the recipe to at least "
            f"{int(used * 1.3 / 2**20) + 64}",
        )
    return used


def tree_digest(folder: Path) -> str:
    """Content hash of a tree: every path with its type, mode, owner and content (or link
    target, or device numbers); not its times. Two builds of the same inputs compare on it."""
    digest = hashlib.sha256()
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = Path(current) / name
            info = path.lstat()
            relative = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = sha256_file(path)
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                detail = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
            else:
                detail = ""
            digest.update(
                f"{relative}\0{info.st_mode:o}\0{info.st_uid}:{info.st_gid}\0{detail}\n".encode()
            )
    return digest.hexdigest()


def clamp_times(folder: Path, epoch: int) -> None:
    """No file newer than the build's epoch: timestamps stop differing between builds."""
    for path in [folder, *folder.rglob("*")]:
        stat = path.lstat()
        if stat.st_mtime > epoch or stat.st_atime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)


def chown_tree(folder: Path, uid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


def start_build(
    recipe_path: Path, boot_medium: str, other_hint: str
) -> tuple[Recipe, BoardProfile, str, int]:
    """Everything checked before a slow step: the recipe, the board kind, tools, root.

    Returns the recipe, its board, the recipe hash and the build's SOURCE_DATE_EPOCH (also set
    in the environment, for mmdebstrap and the file-system tools).
    """
    recipe, board = load_recipe(recipe_path, base_dir=REPO_ROOT)
    if board.boot_medium != boot_medium:
        raise ToolError(
            f"board {board.name} boots from {board.boot_medium}: this build is for {boot_medium}",
            where=f"{recipe_path}: board",
            hint=other_hint,
        )
    preflight()
    epoch = source_date_epoch()
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    return recipe, board, recipe_hash(recipe), epoch


@dataclass(frozen=True)
class PreparedTree:
    root: Path
    data: Path
    components: list[Component]


def prepare_tree(
    recipe: Recipe,
    board: BoardProfile,
    layout: DiskLayout | None,
    cache_dir: Path,
    work: Path,
    report: BuildReport,
    epoch: int,
    *,
    slots: SlotSettings | None = None,
) -> PreparedTree:
    """Rootfs (cached) + application + system files + models, as folders under ``work``.

    With a disk layout (Pi) the data dir becomes its own partition's folder; without one
    (Jetson: NVIDIA's flash layout) it stays inside the root file system.
    """
    root, data = work / "root", work / "data"
    with report.stage("root file system (mmdebstrap)"):
        # No PARTUUID in the cached tree: U-Boot names the root slot (the cache survives
        # recipe changes that move the partitions).
        tarball, report.rootfs_cached = build_rootfs(
            rootfs_spec(recipe, board.boot_medium, "", epoch), cache_dir
        )
    with report.stage("unpack the root file system"):
        extract_rootfs(tarball, root)
    with report.stage("slim the root file system"):
        report.sizes_bytes |= {
            f"slimmed_{what}": size
            for what, size in slim_rootfs(root, slim_options(recipe, board)).items()
        }
    with report.stage("application venv (aarch64 wheels)"):
        app = install_application(root, cache_dir / "wheels")
    with report.stage("system files, units, models"):
        settings = SystemSettings(
            board=board.name,
            hostname=recipe.hostname,
            services={str(name): enabled for name, enabled in recipe.services.items()},
            has_vosk_model=recipe.vosk_model is not None,
            boot_medium=board.boot_medium,
        )
        install_system_files(root, layout, settings)
        if layout is not None and slots is not None:
            install_slot_files(root, layout, slots)
        shutil.rmtree(data, ignore_errors=True)
        if layout is not None:
            shutil.move(root / DATA_MOUNT, data)
            (root / DATA_MOUNT).mkdir()
        else:
            data = root / DATA_MOUNT
        stage_data(recipe, data, REPO_ROOT, cache_dir)
        chown_tree(data, APP_UID)
        data.chmod(0o750)
        components = [*debian_packages(root), *wheels(app.site_packages), *models(data / "models")]
    return PreparedTree(root, data, components)


def build_image(
    recipe_path: Path,
    out_dir: Path,
    cache_dir: Path,
    *,
    compress: bool = True,
    xz_level: int = DEFAULT_XZ_LEVEL,
    bundle: bool = True,
    update_keys: Path | None = None,
    work_dir: Path | None = None,
    keep_work: bool = False,
) -> BuildReport:
    """Build the image and (unless ``bundle`` is off) the signed RAUC bundle of its root file
    system; ``update_keys`` holds the CA certificate the image trusts and the signing key
    (default: a development set under the cache, made on first use). ``work_dir`` (default
    under the cache) holds the staged trees, removed afterwards unless ``keep_work`` (the
    reproducibility check compares them)."""
    recipe, board, digest, epoch = start_build(
        recipe_path, "sd", "Jetson boards get a rootfs + flash bundle: moltbot image jetson-bundle"
    )
    require_update_tools(bundle=bundle)
    layout = layout_for(recipe, digest, board.partitions)
    out_dir.mkdir(parents=True, exist_ok=True)
    image = out_dir / f"{recipe.name}.img"
    report = BuildReport(image, digest)
    work = work_dir or cache_dir / "work" / recipe.name
    signing = update_signing(update_keys, cache_dir)
    slots = SlotSettings(
        compatible_for(board.name, recipe.name), signing.keyring, bundle_version(epoch)
    )
    tree = prepare_tree(recipe, board, layout, cache_dir, work, report, epoch, slots=slots)
    boot = work / "boot"
    with report.stage("boot files"):
        shutil.rmtree(boot, ignore_errors=True)
        shutil.move(boot_files(tree.root), boot)
        install_boot_partition_files(tree.root, boot)
        (tree.root / BOOT_MOUNT).mkdir()
        for name, folder in (("root", tree.root), ("data", tree.data), ("boot", boot)):
            clamp_times(folder, epoch)
            report.tree_sha256[name] = tree_digest(folder)
        report.largest_directories["root"] = largest_directories(tree.root)
    if board.boot_device is not None:
        with report.stage("boot path: the DTB's SD-card drivers are in the initramfs"):
            report.boot_path = check_image(tree.root, boot, board.boot_device)
    with report.stage("partitions and disk image"):
        for name, folder in (("root", tree.root), ("data", tree.data), ("boot", boot)):
            report.sizes_bytes[f"{name}_files"] = check_fits(
                name, folder, layout.partition(name).size_mib
            )
        parts = {name: work / f"{name}.part" for name in ("boot", "root", "data")}
        build_vfat(parts["boot"], layout.partition("boot"), boot, digest)
        build_ext4(parts["root"], layout.partition("root"), tree.root, digest, epoch)
        build_ext4(parts["data"], layout.partition("data"), tree.data, digest, epoch)
        assemble(image, layout, parts)
    bundle_file = out_dir / f"{recipe.name}.raucb"
    bundle_file.unlink(missing_ok=True)
    if bundle:
        with report.stage("signed update bundle (RAUC, verity)"):
            report.sizes_bytes["update_bundle"] = write_bundle(
                parts["root"], bundle_file, slots.compatible, signing, epoch, digest
            )
    for part in parts.values():
        part.unlink()
    with report.stage("outputs (.bmap, .xz, SHA256SUMS, manifest, SBOM)"):
        manifest = build_manifest(digest, tree.components, image, epoch)
        manifest["partitions"] = {
            p.name: {"partuuid": layout.partuuid(p.name), "size_mib": p.size_mib}
            for p in layout.partitions
        }
        manifest["board"] = board.name
        manifest["tree_sha256"] = report.tree_sha256
        manifest["update"] = {
            "compatible": slots.compatible,
            "version": bundle_version(epoch),
            "bundle": bundle_file.name if bundle else None,
            "keyring_sha256": sha256_file(signing.keyring),
        }
        write_outputs(
            image,
            manifest,
            digest,
            compress=compress,
            xz_level=xz_level,
            extra=[bundle_file] if bundle else [],
        )
    report.sizes_bytes["image"] = image.stat().st_size
    xz = image.with_name(f"{image.name}.xz")
    if xz.exists():
        report.sizes_bytes["image_xz"] = xz.stat().st_size
    (out_dir / "build-report.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report
