"""``moltbot image …``: host-side commands of the image builder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from images.outputs import DEFAULT_XZ_LEVEL

cache_option = click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Rootfs + wheel cache. Default: $MOLTBOT_IMAGE_CACHE or ~/.cache/moltbot-image.",
)

update_keys_option = click.option(
    "--update-keys",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with the update CA certificate (the devices' RAUC keyring) and the signing key "
    "+ certificate (moltbot image keys init). Default: development keys under the cache.",
)


@click.group()
def image() -> None:
    """Validate recipes and configure built images (host side)."""


@image.command("schema")
def image_schema() -> None:
    """Print the JSON Schema of image recipes."""
    from images.recipe import recipe_schema  # noqa: PLC0415

    click.echo(json.dumps(recipe_schema(), indent=2))


@image.command("validate")
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
def image_validate(recipe: Path) -> None:
    """Check a recipe (fields, board, model files) without building anything."""
    from images.disk import plan_layout  # noqa: PLC0415
    from images.recipe import load_recipe, recipe_hash  # noqa: PLC0415

    parsed, board = load_recipe(recipe)
    digest = recipe_hash(parsed)
    sizes = board.partitions
    layout = plan_layout(
        digest,
        parsed.partitions.boot_mib or sizes.boot_mib,
        parsed.partitions.root_mib or sizes.root_mib,
        parsed.partitions.data_mib or sizes.data_mib,
    )
    click.echo(f"{parsed.name}: board {board.name}, recipe sha256 {digest[:16]}…")
    for part in layout.partitions:
        click.echo(
            f"  {part.name:<5} {part.kind:<5} {part.size_mib:>6} MiB at {part.start_mib} MiB"
            f"  PARTUUID={layout.partuuid(part.name)}"
        )


@image.command("build")
@click.argument(
    "recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(__file__).parent / "recipes" / "rpi4b.yaml",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("images/out"),
    show_default=True,
    help="Folder for the image and its outputs.",
)
@cache_option
@click.option("--no-xz", is_flag=True, help="Skip the .img.xz.")
@click.option(
    "--xz-level",
    type=click.IntRange(0, 9),
    default=DEFAULT_XZ_LEVEL,
    show_default=True,
    help="xz preset of the .img.xz: higher is smaller and slower (3: about 5 % smaller, "
    "3x the time).",
)
@update_keys_option
@click.option("--no-bundle", is_flag=True, help="Skip the signed update bundle (.raucb).")
@click.option(
    "--verify-reproducible",
    is_flag=True,
    help="Build twice (staged in different folders) and compare: same sha256, or the first "
    "file or byte that differs. Exit 1 when they differ.",
)
def image_build(
    recipe: Path,
    out_dir: Path,
    cache_dir: Path | None,
    no_xz: bool,
    xz_level: int,
    update_keys: Path | None,
    no_bundle: bool,
    verify_reproducible: bool,
) -> None:
    """Build a flashable image from RECIPE (default: the rpi4b recipe). Needs root."""
    from images.build import build_image  # noqa: PLC0415
    from images.rootfs import default_cache_dir  # noqa: PLC0415

    if verify_reproducible:
        _verify_reproducible(recipe, out_dir, cache_dir or default_cache_dir())
        return
    report = build_image(
        recipe,
        out_dir,
        cache_dir or default_cache_dir(),
        compress=not no_xz,
        xz_level=xz_level,
        bundle=not no_bundle,
        update_keys=update_keys,
    )
    for name, seconds in report.stages_s.items():
        click.echo(f"  {seconds:7.1f} s  {name}")
    click.echo(
        f"built {report.image} ({report.sizes_bytes['image'] / 2**20:.0f} MiB"
        + (
            f", {report.sizes_bytes['image_xz'] / 2**20:.0f} MiB as .xz"
            if "image_xz" in report.sizes_bytes
            else ""
        )
        + f"){' with the cached rootfs' if report.rootfs_cached else ''}; "
        f"flash it with: moltbot flash {report.image} /dev/sdX"
    )
    if "update_bundle" in report.sizes_bytes:
        click.echo(
            f"update bundle {report.image.with_suffix('.raucb')} "
            f"({report.sizes_bytes['update_bundle'] / 2**20:.0f} MiB): "
            "moltbot system update on a device running an older image installs it"
        )


def _verify_reproducible(recipe: Path, out_dir: Path, cache_dir: Path) -> None:
    from images.reproducible import verify_reproducible  # noqa: PLC0415

    result = verify_reproducible(recipe, out_dir, cache_dir)
    for image, digest in zip(result.images, result.sha256, strict=True):
        click.echo(f"  {digest}  {image}")
    if result.identical:
        click.echo("reproducible: both builds are byte-identical")
        return
    click.echo(f"NOT reproducible: {result.first_difference}", err=True)
    raise SystemExit(1)


@image.command("configure")
@click.argument("image_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--site",
    "site_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Site config (broker, credentials, device name, Wi-Fi, SSH keys).",
)
@click.option(
    "--inventory",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV with one unit per row: device_id, name[, broker_username, "
    "broker_password, api_token].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="With --inventory: folder for the per-unit images and ledger.csv.",
)
def image_configure(
    image_file: Path, site_file: Path | None, inventory: Path | None, out: Path | None
) -> None:
    """Write the site config into IMAGE's boot partition in place (no root, no rebuild)."""
    from edge.errors import InputError  # noqa: PLC0415
    from images.configure import configure_batch, configure_image  # noqa: PLC0415

    if inventory is not None:
        if out is None:
            raise InputError(
                "--inventory needs --out",
                where="--out",
                hint="name a folder for the per-unit images",
            )
        ledger = configure_batch(image_file, site_file, inventory, out)
        click.echo(f"configured {len(ledger)} unit image(s) in {out}; ledger: {out}/ledger.csv")
        return
    if site_file is None:
        raise InputError(
            "nothing to write",
            where="--site",
            hint="pass --site FILE, or --inventory CSV --out DIR",
        )
    configure_image(image_file, site_file)
    click.echo(f"wrote {site_file} into {image_file} (boot partition, moltbot/site.yaml)")


@click.command("flash")
@click.argument("image_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("device", type=click.Path(path_type=Path))
@click.option(
    "--bmap",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Block map (default: IMAGE.bmap beside the image, when present).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def flash_command(image_file: Path, device: Path, bmap: Path | None, yes: bool) -> None:
    """Write IMAGE to DEVICE (an SD card), only the mapped blocks, then verify by reading back."""
    from images.flash import check_target, write_image  # noqa: PLC0415

    check_target(device, image_file.stat().st_size)  # refuse early, before asking
    block_map = bmap or image_file.with_name(f"{image_file.name}.bmap")
    if not yes:
        click.confirm(f"Erase everything on {device} and write {image_file.name}?", abort=True)
    shown = [-1]

    def progress(done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if percent != shown[0]:
            click.echo(f"\rwriting {percent:3d}%", nl=False, err=True)
            shown[0] = percent

    written = write_image(image_file, device, bmap=block_map, progress=progress)
    click.echo("", err=True)
    click.echo(f"wrote and verified {written} bytes ({written / 2**20:.1f} MiB) on {device}")


@click.group("balena")
def balena_group() -> None:
    """balena fleet projects generated from the image recipes (host side)."""


@balena_group.command("generate")
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(__file__).parent / "recipes" / "rpi4b.yaml",
    show_default=True,
    help="The image recipe whose models and version the fleet ships.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for the project (replaced when it exists).",
)
@click.option(
    "--device-type",
    "device_types",
    multiple=True,
    help="Limit to these balena device types (default: every supported one).",
)
def balena_generate(recipe: Path, out_dir: Path, device_types: tuple[str, ...]) -> None:
    """Write docker-compose.yml, Dockerfile.template and balena.yml for `balena push`."""
    from images.fleet import generate  # noqa: PLC0415

    project = generate(recipe, out_dir, device_types or None)
    click.echo(
        f"fleet project in {project}; release it with: balena push <fleet> --source {project}"
    )


@image.command("jetson-bundle")
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("images/out"),
    show_default=True,
    help="Folder; the bundle goes into OUT/<recipe name>/.",
)
@cache_option
@update_keys_option
def image_jetson_bundle(
    recipe: Path, out_dir: Path, cache_dir: Path | None, update_keys: Path | None
) -> None:
    """Build a Jetson rootfs + flash bundle (flash.sh runs NVIDIA's tools from your BSP)."""
    from images.jetson import build_jetson_bundle  # noqa: PLC0415
    from images.rootfs import default_cache_dir  # noqa: PLC0415

    report = build_jetson_bundle(
        recipe, out_dir, cache_dir or default_cache_dir(), update_keys=update_keys
    )
    for name, seconds in report.stages_s.items():
        click.echo(f"  {seconds:7.1f} s  {name}")
    click.echo(
        f"bundle in {report.image.parent}; next: {report.image.parent}/flash.sh "
        "/path/to/Linux_for_Tegra --check-only"
    )


@image.group("keys")
def image_keys() -> None:
    """Keys that sign update bundles: a development PKI, or your plant's own."""


@image_keys.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--force", is_flag=True, help="Replace the keys DIRECTORY already holds.")
def image_keys_init(directory: Path, force: bool) -> None:
    """Make a development CA and a signing key + certificate in DIRECTORY, with a README."""
    from images.update_keys import init_keys  # noqa: PLC0415

    keys = init_keys(directory, force=force)
    click.echo(
        f"update keys in {directory}: the keyring is {keys.keyring.name} (the only file that "
        f"goes into an image); {keys.ca_key.name} and {keys.signing.key.name} are private "
        f"(0600) and never go into an image; see {keys.readme}"
    )


@image.command("bundle")
@click.argument("rootfs_image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--keys",
    "keys_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder with ca.cert.pem, signing.cert.pem and signing.key.pem (moltbot image keys "
    "init, or your PKI's files under these names).",
)
@click.option(
    "--compatible",
    required=True,
    help="The devices' RAUC compatible string: moltbot-<board>-<recipe name>.",
)
@click.option("--version", "bundle_version", required=True, help="Version of this update.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The bundle file (.raucb), replaced when it exists.",
)
@click.option("--build-id", help="Build id in the manifest (default: the build time, UTC).")
@click.option("--description", help="One line for the manifest.")
def image_bundle(
    rootfs_image: Path,
    keys_dir: Path,
    compatible: str,
    bundle_version: str,
    out: Path,
    build_id: str | None,
    description: str | None,
) -> None:
    """Sign ROOTFS_IMAGE (the ext4 image of a root file system) into a RAUC update bundle."""
    from images.update_bundle import create_bundle  # noqa: PLC0415
    from images.update_keys import KEYRING_NAME, signing_files  # noqa: PLC0415

    started = time.monotonic()
    info = create_bundle(
        rootfs_image,
        out=out,
        compatible=compatible,
        version=bundle_version,
        signing=signing_files(keys_dir),
        build_id=build_id,
        description=description,
    )
    click.echo(
        f"signed {info.format} bundle {info.path} ({info.size_bytes / 2**20:.1f} MiB) for "
        f"{info.compatible}, version {info.version}, in {time.monotonic() - started:.1f} s; "
        f"check it with: moltbot image bundle-info {info.path} --keyring {keys_dir / KEYRING_NAME}"
    )


@image.command("bundle-info")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--keyring",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The CA certificate (ca.cert.pem) that must have issued the bundle's signer.",
)
@click.option("--compatible", help="Refuse a bundle that is for other devices.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def image_bundle_info(bundle: Path, keyring: Path, compatible: str | None, as_json: bool) -> None:
    """Check BUNDLE as a device would (signature chain, compatible, payload) and show it."""
    from dataclasses import asdict  # noqa: PLC0415

    from images.update_bundle import inspect_bundle  # noqa: PLC0415

    info = inspect_bundle(bundle, keyring=keyring, compatible=compatible)
    if as_json:
        click.echo(json.dumps(asdict(info), indent=2, default=str))
        return
    click.echo(f"{info.path}: verified against {keyring}")
    click.echo(f"  compatible   {info.compatible}")
    click.echo(f"  version      {info.version}")
    click.echo(f"  format       {info.format}")
    click.echo(f"  build        {info.build or '-'}")
    click.echo(f"  description  {info.description or '-'}")
    for entry in info.images:
        click.echo(
            f"  image        {entry.slot_class}: {entry.filename}, "
            f"{entry.size_bytes / 2**20:.1f} MiB, sha256 {entry.sha256}"
        )
