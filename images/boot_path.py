"""Does the initramfs hold every driver the root device needs? Read from the board's own DTB.

The kernel finds the root file system only after the boot device's driver has probed, and a
driver probes only after everything its device-tree node refers to exists: regulators
(``*-supply``), clocks, resets, pin control, GPIO controllers, power domains, interrupt
controllers, mailboxes, and the buses the node sits on. Each of those is a node with a
``compatible``; the kernel's ``modules.alias`` says which module drives it. A driver that is
a module but not in the initramfs defers the boot device forever ("Gave up waiting for root
file system device") — a failure no virtio-based emulator shows. This module walks that graph
and names every missing module before an image is written.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge.board import BootDeviceSpec
from edge.errors import MoltbotError
from images.devicetree import DeviceTree, DtNode

logger = logging.getLogger(__name__)

# Properties that point at single providers (one phandle, no arguments).
SINGLE_PHANDLE = re.compile(r"^(.+-supply|interrupt-parent|pinctrl-\d+|firmware)$")
# Properties that hold (phandle, args...) lists, with the provider's cell-count property.
PHANDLE_LISTS = {
    "clocks": "#clock-cells",
    "resets": "#reset-cells",
    "power-domains": "#power-domain-cells",
    "mboxes": "#mbox-cells",
    "dmas": "#dma-cells",
    "phys": "#phy-cells",
    "iommus": "#iommu-cells",
    "interrupts-extended": "#interrupt-cells",
}
GPIO_LIST = re.compile(r"^(.+-)?gpios?$")
# Nodes the kernel's OF core populates itself: no driver module is ever involved.
CORE_COMPATIBLES = frozenset({"simple-bus", "simple-mfd", "syscon"})
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


class MissingBootModuleError(MoltbotError):
    """A driver the root device depends on is a module the initramfs does not hold."""


@dataclass(frozen=True)
class Dependency:
    node: DtNode
    reason: str  # how the boot device reaches it, e.g. "vqmmc-supply of /emmc2bus/mmc@7e340000"


@dataclass(frozen=True)
class DriverStatus:
    path: str
    reason: str
    compatible: tuple[str, ...]
    modules: tuple[str, ...]
    # "initramfs", "built-in" (a module name in modules.builtin, or a built-in alias),
    # "missing", "core" (populated by the OF core) or "not a module": no loadable module's
    # alias matches, so it is a built-in driver without alias data (irqchips, most clock and
    # pin controllers on this kernel) or a node that needs none; nothing an initramfs can change.
    where: str

    def line(self) -> str:
        modules = ",".join(self.modules) or "-"
        return f"{self.where:10} {modules:28} {self.path}  ({self.reason})"


def boot_dependencies(tree: DeviceTree, boot_node: str) -> list[Dependency]:
    """The boot device's node and every node it needs, each once, boot device first."""
    start = tree.node(boot_node)
    found: dict[str, Dependency] = {}
    queue = [Dependency(start, "boot device")]
    while queue:
        current = queue.pop(0)
        node = _driven_node(current.node)
        if node is None or node.path in found:
            continue
        found[node.path] = Dependency(node, current.reason)
        queue += _parents(node) + _providers(tree, node)
    return list(found.values())


def _driven_node(node: DtNode) -> DtNode | None:
    """The node a driver binds to: pin-configuration and similar sub-nodes have no compatible
    of their own, their nearest ancestor with one (the controller) is what must probe."""
    current: DtNode | None = node
    while current is not None and not current.compatible:
        current = current.parent
    if current is None or current.parent is None:  # the root node is the machine, not a device
        return None
    return current


def _parents(node: DtNode) -> list[Dependency]:
    parent = node.parent
    if parent is None or parent.parent is None:
        return []
    return [Dependency(parent, f"bus of {node.path}")]


def _providers(tree: DeviceTree, node: DtNode) -> list[Dependency]:
    deps: list[Dependency] = []
    for prop in node.properties:
        targets: list[int] = []
        if SINGLE_PHANDLE.match(prop):
            targets = node.cells(prop)
        elif prop in PHANDLE_LISTS:
            targets = _phandles(tree, node.cells(prop), PHANDLE_LISTS[prop], default_cells=1)
        elif GPIO_LIST.match(prop) and not prop.startswith("#"):
            targets = _phandles(tree, node.cells(prop), "#gpio-cells", default_cells=2)
        for phandle in targets:
            provider = tree.phandles.get(phandle)
            if provider is not None:
                deps.append(Dependency(provider, f"{prop} of {node.path}"))
    interrupt_parent = _inherited_interrupt_parent(tree, node)
    if "interrupts" in node.properties and interrupt_parent is not None:
        deps.append(Dependency(interrupt_parent, f"interrupts of {node.path}"))
    return deps


def _phandles(tree: DeviceTree, cells: list[int], count_prop: str, default_cells: int) -> list[int]:
    """Split ``<&a 1 2 &b 3 ...>`` by each provider's cell count."""
    out: list[int] = []
    index = 0
    while index < len(cells):
        phandle = cells[index]
        provider = tree.phandles.get(phandle)
        if phandle == 0 or provider is None:  # an empty entry, or not a phandle list after all
            index += 1
            continue
        out.append(phandle)
        index += 1 + provider.cell(count_prop, default_cells)
    return out


def _inherited_interrupt_parent(tree: DeviceTree, node: DtNode) -> DtNode | None:
    current: DtNode | None = node
    while current is not None:
        if "interrupt-parent" in current.properties:
            return tree.phandles.get(current.cell("interrupt-parent", 0))
        current = current.parent
    return None


def modalias(node: DtNode) -> str:
    """The ``of:`` alias the kernel gives a device made from ``node`` (drivers/of/device.c)."""
    name = node.name.split("@", 1)[0]
    device_type = (node.strings("device_type") or ["<NULL>"])[0]
    compat = "".join(f"C{c.replace(' ', '_')}" for c in node.compatible)
    return f"of:N{name}T{device_type}{compat}"


@dataclass(frozen=True)
class KernelModules:
    """What one kernel (``lib/modules/<version>``) knows: module aliases and built-ins."""

    version: str
    aliases: tuple[tuple[str, str], ...]
    builtin_aliases: tuple[tuple[str, str], ...]
    builtin: frozenset[str]

    @classmethod
    def read(cls, modules_dir: Path) -> KernelModules:
        aliases = tuple(_aliases((modules_dir / "modules.alias").read_text()))
        modinfo = modules_dir / "modules.builtin.modinfo"
        builtin_aliases: list[tuple[str, str]] = []
        if modinfo.is_file():
            for entry in modinfo.read_bytes().split(b"\0"):
                module, _, rest = entry.decode(errors="replace").partition(".")
                if rest.startswith("alias=of:"):
                    builtin_aliases.append((rest.removeprefix("alias="), normalise(module)))
        builtin = frozenset(
            normalise(Path(line.strip()).name.split(".ko")[0])
            for line in (modules_dir / "modules.builtin").read_text().splitlines()
            if line.strip()
        )
        return cls(modules_dir.name, aliases, tuple(builtin_aliases), builtin)

    def modules_for(self, node: DtNode) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(loadable modules, built-in drivers) whose alias matches the node."""
        alias = modalias(node)
        loadable = sorted({m for pattern, m in self.aliases if fnmatch.fnmatchcase(alias, pattern)})
        builtin = sorted(
            {m for pattern, m in self.builtin_aliases if fnmatch.fnmatchcase(alias, pattern)}
        )
        return tuple(loadable), tuple(builtin)


def _aliases(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("of:"):
            out.append((parts[1], normalise(parts[2])))
    return out


def normalise(module: str) -> str:
    return module.replace("-", "_")


def initramfs_modules(listing: list[str]) -> frozenset[str]:
    """Module names in an initramfs file listing."""
    names = set()
    for entry in listing:
        base = entry.rsplit("/", 1)[-1]
        for suffix in MODULE_SUFFIXES:
            if base.endswith(suffix):
                names.add(normalise(base.removesuffix(suffix)))
    return frozenset(names)


def check_boot_path(
    tree: DeviceTree, boot_node: str, kernel: KernelModules, in_initramfs: frozenset[str]
) -> list[DriverStatus]:
    """Every node the boot device needs with where its driver is; raises when one is missing."""
    statuses = []
    for dep in boot_dependencies(tree, boot_node):
        loadable, builtin = kernel.modules_for(dep.node)
        compatible = tuple(dep.node.compatible)
        if builtin or any(m in kernel.builtin for m in loadable):
            where, modules = "built-in", builtin or loadable
        elif any(m in in_initramfs for m in loadable):
            where, modules = "initramfs", tuple(m for m in loadable if m in in_initramfs)
        elif loadable:
            where, modules = "missing", loadable
        elif set(compatible) & CORE_COMPATIBLES:
            where, modules = "core", ()
        else:
            where, modules = "not a module", ()
        statuses.append(DriverStatus(dep.node.path, dep.reason, compatible, modules, where))
    missing = [s for s in statuses if s.where == "missing"]
    if missing:
        lines = "; ".join(
            f"{s.path} (compatible {s.compatible[0]!r}, {s.reason}) needs module "
            f"{' or '.join(s.modules)}"
            for s in missing
        )
        raise MissingBootModuleError(
            f"the initramfs lacks drivers the boot device {boot_node} depends on: {lines}",
            where=f"kernel {kernel.version}",
            hint="add the module(s) to INITRAMFS_MODULES in images/rootfs.py "
            "(the initramfs is built with MODULES=list)",
        )
    return statuses


def read_initramfs_listing(initrd: Path) -> list[str]:
    """File names inside an initramfs (gzip, zstd, xz or plain cpio archives, concatenated)."""
    return _cpio_names(initrd.read_bytes(), str(initrd))


def initramfs_compression(initrd: Path) -> str:
    return _compression(initrd.read_bytes()[:6])


def _compression(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ"):
        return "xz"
    if head.startswith(b"0707"):
        return "cpio"
    return "unknown"


def _cpio_names(data: bytes, where: str) -> list[str]:
    names: list[str] = []
    offset = 0
    while offset + 110 <= len(data):
        if data[offset] == 0:  # padding between concatenated archives
            offset += 1
            continue
        if data[offset : offset + 6] not in (b"070701", b"070702"):
            # A compressed archive (alone, or after an uncompressed early one).
            return names + _cpio_names(_decompress(data[offset:], where), where)
        header = data[offset : offset + 110]
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        name = data[offset + 110 : offset + 110 + name_size - 1].decode(errors="replace")
        offset = _pad4(_pad4(offset + 110 + name_size) + size)
        if name != "TRAILER!!!":
            names.append(name)
    return names


def _decompress(data: bytes, where: str) -> bytes:
    kind = _compression(data[:6])
    tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"], "xz": ["xz", "-dc"]}.get(kind)
    if tool is None:
        raise MoltbotError(
            "the initramfs holds data in no format this check reads",
            where=where,
            hint="build it with COMPRESS=zstd, gzip or xz",
        )
    result = subprocess.run(  # noqa: S603 - fixed tool, data on stdin
        tool, input=data, capture_output=True, check=False
    )
    if not result.stdout:  # a trailing zero padding makes some tools exit non-zero
        raise MoltbotError(
            f"could not decompress the initramfs ({kind}): {result.stderr.decode()[-300:]}",
            where=where,
            hint=f"apt-get install {tool[0]}",
        )
    return result.stdout


def _pad4(offset: int) -> int:
    return (offset + 3) & ~3


@dataclass(frozen=True)
class BootPathReport:
    """One checked DTB: its drivers and where each is, for the build report."""

    device_tree: str
    kernel: str
    initramfs: str
    compression: str
    drivers: tuple[DriverStatus, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "device_tree": self.device_tree,
            "kernel": self.kernel,
            "initramfs": self.initramfs,
            "compression": self.compression,
            "drivers": [s.line() for s in self.drivers],
        }


def check_image(root: Path, boot: Path, spec: BootDeviceSpec) -> list[BootPathReport]:
    """Check each of the board's DTBs in ``boot`` (the FAT partition) against the kernel and
    initrd the root slot boots (its own /boot)."""
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not initrds:
        raise MoltbotError(
            "the root file system has no /boot/initrd.img-* to check",
            where=str(root / "boot"),
            hint="the image's kernel package did not build an initramfs (initramfs-tools)",
        )
    initrd = initrds[-1]
    version = initrd.name.removeprefix("initrd.img-")
    kernel = KernelModules.read(root / "lib" / "modules" / version)
    listing = read_initramfs_listing(initrd)
    in_initramfs = initramfs_modules(listing)
    reports = []
    for name in spec.device_trees:
        dtb = boot / name
        if not dtb.is_file():
            raise MoltbotError(
                f"the board's device tree {name} is not on the boot partition",
                where=str(boot),
                hint="fix boot_device.device_trees in the board profile (hw/*.yaml)",
            )
        statuses = check_boot_path(DeviceTree.read(dtb), spec.node, kernel, in_initramfs)
        for status in statuses:
            logger.debug("%s: %s", name, status.line())
        logger.info(
            "boot path %s %s: %d drivers (%d in the initramfs), none missing",
            name,
            spec.node,
            len(statuses),
            sum(s.where == "initramfs" for s in statuses),
        )
        reports.append(
            BootPathReport(
                name, version, initrd.name, _compression(initrd.read_bytes()[:6]), tuple(statuses)
            )
        )
    return reports
