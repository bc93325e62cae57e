"""A reader for flattened device trees (``.dtb``), the format the Pi firmware hands the kernel.

Only what the boot-path check needs: nodes by path and by phandle, raw properties, and the
few ways properties are decoded (cells, string lists). The format is the Devicetree
Specification's (v0.4, chapter 5): a header, a structure block of tokens and a strings block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import InputError

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9


class DeviceTreeError(InputError):
    """A .dtb file that is not a flattened device tree or is cut short."""


@dataclass(eq=False)
class DtNode:
    """One node: its full path, raw properties and children in file order."""

    path: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[DtNode] = field(default_factory=list)
    parent: DtNode | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"

    def strings(self, prop: str) -> list[str]:
        raw = self.properties.get(prop, b"")
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]

    def cells(self, prop: str) -> list[int]:
        raw = self.properties.get(prop, b"")
        return list(struct.unpack(f">{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))

    def cell(self, prop: str, default: int) -> int:
        values = self.cells(prop)
        return values[0] if values else default

    @property
    def compatible(self) -> list[str]:
        return self.strings("compatible")

    @property
    def enabled(self) -> bool:
        status = self.strings("status")
        return not status or status[0] in ("okay", "ok")

    @property
    def phandle(self) -> int | None:
        for prop in ("phandle", "linux,phandle"):
            if prop in self.properties:
                return self.cell(prop, 0)
        return None


@dataclass
class DeviceTree:
    root: DtNode
    nodes: dict[str, DtNode]
    phandles: dict[int, DtNode]

    @classmethod
    def read(cls, path: Path) -> DeviceTree:
        try:
            return cls.parse(path.read_bytes())
        except DeviceTreeError as exc:
            raise DeviceTreeError(exc.what, where=str(path), hint=exc.hint) from exc

    @classmethod
    def parse(cls, blob: bytes) -> DeviceTree:
        if len(blob) < 40 or struct.unpack_from(">I", blob)[0] != FDT_MAGIC:
            raise DeviceTreeError(
                "not a flattened device tree (bad magic)",
                hint="pass a compiled .dtb (dtc -I dts -O dtb), not a .dts or overlay",
            )
        _, total, off_struct, off_strings, _, _, _, _, _, size_struct = struct.unpack_from(
            ">10I", blob
        )
        if total > len(blob):
            raise DeviceTreeError(
                f"the device tree is cut short ({len(blob)} of {total} bytes)",
                hint="copy the .dtb again",
            )
        builder = _TreeBuilder(blob, blob[off_strings:])
        builder.walk(off_struct, off_struct + size_struct)
        if builder.root is None:
            raise DeviceTreeError("the device tree has no root node")
        nodes = builder.nodes
        phandles = {n.phandle: n for n in nodes.values() if n.phandle is not None}
        return cls(builder.root, nodes, phandles)

    def node(self, path: str) -> DtNode:
        found = self.nodes.get(path) or self._by_alias(path)
        if found is None:
            raise DeviceTreeError(
                f"the device tree has no node {path}",
                hint="name the node by its full path (e.g. /emmc2bus/mmc@7e340000) or an alias",
            )
        return found

    def _by_alias(self, name: str) -> DtNode | None:
        aliases = self.nodes.get("/aliases")
        if aliases is None or name not in aliases.properties:
            return None
        return self.nodes.get(aliases.strings(name)[0])


def _align(offset: int) -> int:
    return (offset + 3) & ~3


class _TreeBuilder:
    """Walks the structure block's tokens into nodes."""

    def __init__(self, blob: bytes, strings: bytes) -> None:
        self.blob, self.strings = blob, strings
        self.nodes: dict[str, DtNode] = {}
        self.stack: list[DtNode] = []
        self.root: DtNode | None = None

    def walk(self, pos: int, end: int) -> None:
        while pos < end:
            (token,) = struct.unpack_from(">I", self.blob, pos)
            pos += 4
            if token == FDT_BEGIN_NODE:
                pos = self._begin_node(pos)
            elif token == FDT_END_NODE:
                if not self.stack:
                    raise DeviceTreeError("unbalanced nodes in the structure block")
                self.stack.pop()
            elif token == FDT_PROP:
                pos = self._property(pos)
            elif token == FDT_END:
                return
            elif token != FDT_NOP:
                raise DeviceTreeError(f"unknown token {token:#x} at byte {pos - 4}")

    def _begin_node(self, pos: int) -> int:
        name_end = self.blob.index(b"\0", pos)
        name = self.blob[pos:name_end].decode(errors="replace")
        parent = self.stack[-1] if self.stack else None
        path = "/" if parent is None else f"{parent.path.rstrip('/')}/{name}"
        node = DtNode(path, parent=parent)
        if parent is None:
            self.root = node
        else:
            parent.children.append(node)
        self.nodes[path] = node
        self.stack.append(node)
        return _align(name_end + 1)

    def _property(self, pos: int) -> int:
        length, name_offset = struct.unpack_from(">II", self.blob, pos)
        pos += 8
        name = self.strings[name_offset : self.strings.index(b"\0", name_offset)].decode()
        if not self.stack:
            raise DeviceTreeError(f"property {name} outside any node")
        self.stack[-1].properties[name] = self.blob[pos : pos + length]
        return _align(pos + length)
