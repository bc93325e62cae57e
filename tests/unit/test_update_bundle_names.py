"""The pure pieces of update bundles: compatible strings, the manifest, the bundle's layout, the
dm-verity hash tree and the JSON of ``rauc info`` (no rauc, no openssl)."""

from __future__ import annotations

import configparser
import hashlib
from pathlib import Path

import pytest
import yaml

from images.bundle_errors import BundleDamagedError, BundleInputError
from images.bundle_verity import bundle_layout, verity_tree
from images.run import ToolError
from images.update_bundle import (
    COMPATIBLE,
    BundleImage,
    compatible_for,
    parse_rauc_info,
    render_manifest,
)

REPO = Path(__file__).parents[2]
# `rauc info --output-format=json` of a bundle made by Debian 12's rauc 1.8.
RAUC_18_INFO = (
    '{"compatible":"moltbot-rpi4b-rpi4b-appliance","version":"1.4.0","description":null,'
    '"build":"20260101T000000Z","hooks":[],"images":[{"rootfs":{"variant":null,'
    '"filename":"rootfs.ext4","checksum":"7ff49d4c1ddde6382669f2a2d1a6725d9bcefa6e97ed213734b4'
    '863ada0b3c19","size":8388608,"hooks":[],"adaptive":[]}}]}'
)


def test_compatible_string_is_moltbot_board_recipe() -> None:
    assert compatible_for("rpi4b", "rpi4b-appliance") == "moltbot-rpi4b-rpi4b-appliance"
    assert compatible_for("jetson-agx-orin", "orin_lab") == "moltbot-jetson-agx-orin-orin_lab"


def test_every_shipped_recipe_gets_its_own_valid_compatible_string() -> None:
    strings = []
    for recipe in sorted((REPO / "images" / "recipes").glob("*.yaml")):
        fields = yaml.safe_load(recipe.read_text())
        strings.append(compatible_for(fields["board"], fields["name"]))
    assert strings, "no recipes found"
    assert all(COMPATIBLE.fullmatch(text) for text in strings)
    assert len(set(strings)) == len(strings)


@pytest.mark.parametrize(
    ("board", "recipe", "field"),
    [
        ("RPi4B", "x", "board"),
        ("rpi4b", "my recipe", "recipe name"),
        ("rpi4b", "", "recipe name"),
        ("rpi4b", "x\n", "recipe name"),
    ],
)
def test_compatible_string_refuses_names_it_cannot_hold(
    board: str, recipe: str, field: str
) -> None:
    with pytest.raises(BundleInputError) as refused:
        compatible_for(board, recipe)
    assert refused.value.where == field


def test_manifest_names_the_rootfs_image_and_the_verity_format() -> None:
    text = render_manifest(
        compatible="moltbot-rpi4b-x", version="1.4.0", description="nightly", build="b7"
    )
    manifest = configparser.ConfigParser(interpolation=None)
    manifest.read_string(text)
    assert dict(manifest["update"]) == {
        "compatible": "moltbot-rpi4b-x",
        "version": "1.4.0",
        "description": "nightly",
        "build": "b7",
    }
    assert dict(manifest["bundle"]) == {"format": "verity"}
    assert dict(manifest["image.rootfs"]) == {"filename": "rootfs.ext4"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "two\n[image.evil]\nfilename=x"),
        ("description", "a \\n escape"),
        ("build", " leading space"),
        ("compatible", "moltbot rpi4b"),
        ("version", ""),
        ("version", "1.0\n"),
    ],
)
def test_manifest_refuses_values_that_would_change_its_meaning(field: str, value: str) -> None:
    values = {"compatible": "moltbot-x", "version": "1", "description": "d", "build": "b"}
    values[field] = value
    with pytest.raises(BundleInputError) as refused:
        render_manifest(
            compatible=values["compatible"],
            version=values["version"],
            description=values["description"],
            build=values["build"],
        )
    assert refused.value.where == f"--{field}"


def test_bundle_layout_reads_the_signature_size_from_the_last_eight_bytes() -> None:
    layout = bundle_layout(20_000, (1_500).to_bytes(8, "big"), where="b")
    assert (layout.payload_bytes, layout.signature_bytes) == (20_000 - 8 - 1_500, 1_500)


@pytest.mark.parametrize(
    ("size", "signature"), [(20_000, 0), (20_000, 19_992), (20_000, 2**63), (5, 1)]
)
def test_bundle_layout_refuses_a_signature_size_that_does_not_fit(
    size: int, signature: int
) -> None:
    with pytest.raises(BundleDamagedError) as refused:
        bundle_layout(size, signature.to_bytes(8, "big"), where="u.raucb")
    assert refused.value.where == "u.raucb"
    assert "not a complete RAUC bundle" in refused.value.what


def salted(salt: bytes, block: bytes) -> bytes:
    return hashlib.sha256(salt + block).digest()


def test_verity_tree_of_one_block_is_the_block_hash() -> None:
    salt, block = b"s" * 32, b"\x01" * 4096
    assert verity_tree([block], salt) == (salted(salt, block), b"")


def test_verity_tree_of_two_blocks_is_one_padded_hash_block() -> None:
    salt = b"\x07" * 32
    blocks = [b"a" * 4096, b"b" * 4096]
    root, tree = verity_tree(blocks, salt)
    expected = salted(salt, blocks[0]) + salted(salt, blocks[1])
    expected += bytes(4096 - len(expected))
    assert tree == expected
    assert root == salted(salt, expected)


def test_verity_tree_of_129_blocks_stores_the_top_level_first() -> None:
    salt = bytes(range(32))
    blocks = [i.to_bytes(2, "big") * 2048 for i in range(129)]
    root, tree = verity_tree(blocks, salt)
    assert len(tree) == 3 * 4096  # top block, then two level-0 blocks
    level0 = b"".join(salted(salt, block) for block in blocks)
    level0 += bytes(2 * 4096 - len(level0))
    assert tree[4096:] == level0
    top = salted(salt, level0[:4096]) + salted(salt, level0[4096:])
    assert tree[:4096] == top + bytes(4096 - len(top))
    assert root == salted(salt, tree[:4096])


def test_rauc_18_info_json_becomes_typed_fields() -> None:
    info = parse_rauc_info(RAUC_18_INFO, where="u.raucb")
    assert (info.compatible, info.version) == ("moltbot-rpi4b-rpi4b-appliance", "1.4.0")
    assert (info.description, info.build) == (None, "20260101T000000Z")
    assert info.images == (
        BundleImage(
            slot_class="rootfs",
            filename="rootfs.ext4",
            sha256="7ff49d4c1ddde6382669f2a2d1a6725d9bcefa6e97ed213734b4863ada0b3c19",
            size_bytes=8388608,
        ),
    )


@pytest.mark.parametrize("text", ["", "not json", '{"compatible": "x"}', '{"images": 3}'])
def test_unreadable_rauc_info_output_is_a_tool_error(text: str) -> None:
    with pytest.raises(ToolError) as failed:
        parse_rauc_info(text, where="u.raucb")
    assert "rauc info printed what this builder cannot read" in failed.value.what
