"""``moltbot model …``, ``moltbot infer`` and ``moltbot triggers watch``."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from edge import wiring

if TYPE_CHECKING:
    from edge.cli.context import CliState


@click.group()
def model() -> None:
    """List, install, verify, activate, roll back and quantise model versions."""


@model.command("list")
@click.pass_obj
def model_list(state: CliState) -> None:
    """Installed model versions; * marks the active one, REFUSED the ones never to serve."""
    entries = wiring.model_registry(state.loaded().config).entries()
    if not entries:
        click.echo("no models installed")
    for entry in entries:
        accuracy = ", ".join(
            f"{p} {a:.4f}" if a is not None else p for p, a in entry.accuracy.items()
        )
        refused = f"  REFUSED: {entry.refused}" if entry.refused else ""
        click.echo(
            f"{'*' if entry.active else ' '} {entry.name}@{entry.version:<10} {accuracy}{refused}"
        )


@model.command("install")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--activate", "then_activate", is_flag=True, help="Activate it after installing.")
@click.pass_obj
def model_install(state: CliState, folder: Path, then_activate: bool) -> None:
    """Verify a model version folder and copy it into the registry."""
    config = state.loaded().config
    manifest = wiring.model_registry(config).install(folder)
    click.echo(f"installed {manifest.ref}")
    if then_activate:
        served = wiring.inference_service(config).activate(manifest.ref)
        click.echo(f"active: {manifest.ref} on {served.loaded.backend} ({served.loaded.precision})")


@model.command("verify")
@click.argument("folder", type=click.Path(path_type=Path))
@click.pass_obj
def model_verify(state: CliState, folder: Path) -> None:
    """Check a model folder: files, sha256, ONNX validity, inputs, reference outputs here."""
    from edge.inference.registry import ModelRegistry  # noqa: PLC0415
    from edge.inference.verification import verify_folder  # noqa: PLC0415

    manifest = verify_folder(folder)
    config = state.loaded().config
    staging = ModelRegistry(folder.parent.parent) if folder.parent.name == manifest.name else None
    if staging is None:
        click.echo(
            f"{manifest.ref}: files, sha256, ONNX and inputs OK "
            "(lay it out as NAME/VERSION to also run the reference outputs)"
        )
        return
    service = wiring.inference_service(config, staging)
    served = service.activate(manifest.ref, persist=False)
    click.echo(
        f"{manifest.ref}: OK on {served.loaded.backend} ({served.loaded.precision}), "
        f"reference deviation {served.reference_deviation}"
    )


@model.command("activate")
@click.argument("ref")
@click.pass_obj
def model_activate(state: CliState, ref: str) -> None:
    """Make NAME@VERSION the active version (verified and reference-checked first)."""
    served = wiring.inference_service(state.loaded().config).activate(ref)
    manifest = served.loaded.manifest
    click.echo(f"active: {manifest.ref} on {served.loaded.backend} ({served.loaded.precision})")


@model.command("rollback")
@click.argument("name", default="defect")
@click.pass_obj
def model_rollback(state: CliState, name: str) -> None:
    """Go back to the previously active version of NAME."""
    served = wiring.inference_service(state.loaded().config).rollback(name)
    click.echo(f"active: {served.loaded.manifest.ref}")


@model.command("quantize")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder of representative frames.",
)
@click.option(
    "--held-out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of <label>/ subfolders to measure accuracy before and after.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="New model version folder to write.",
)
@click.option("--version", "version", required=True, help="Version of the new folder.")
def model_quantize(
    source: Path, calibration: Path, held_out: Path | None, out: Path, version: str
) -> None:
    """Static INT8 quantisation (QDQ, per-channel) of SOURCE's FP32 model."""
    from edge.inference.quantize import quantize_model  # noqa: PLC0415

    report = quantize_model(source, calibration, held_out, out, version)
    click.echo(
        f"size: {report.fp32_bytes} B fp32 -> {report.int8_bytes} B int8 "
        f"({report.int8_bytes / report.fp32_bytes:.0%})"
    )
    if report.fp32_accuracy is not None and report.int8_accuracy is not None:
        click.echo(
            f"accuracy: {report.fp32_accuracy:.4f} fp32 -> {report.int8_accuracy:.4f} "
            f"int8 (held-out)"
        )
    click.echo(f"wrote {report.output} ({report.images} calibration images)")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def infer(state: CliState, images: tuple[Path, ...]) -> None:
    """Classify image files with the active model; one JSON line each."""
    service = wiring.inference_service(state.loaded().config)
    service.start()
    for image in images:
        prediction = service.infer_image(image.read_bytes(), str(image))
        click.echo(json.dumps({"image": str(image)} | prediction.to_json()))


@click.group()
def triggers() -> None:
    """Run the defect triggers."""


@triggers.command("watch")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to watch (default: triggers.watch_dir).",
)
@click.option(
    "--video",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read frames from a video file instead (needs OpenCV).",
)
@click.option("--camera", type=int, help="Read frames from /dev/videoN instead (needs OpenCV).")
@click.option(
    "--every-nth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --video/--camera: use every Nth frame.",
)
@click.option(
    "--mode",
    type=click.Choice(["stream", "part"]),
    help="Trigger mode (default: stream for --video/--camera, triggers.folder_mode for a folder).",
)
@click.pass_obj
def triggers_watch(
    state: CliState,
    folder: Path | None,
    video: Path | None,
    camera: int | None,
    every_nth: int,
    mode: Literal["stream", "part"] | None,
) -> None:
    """Run frames through the model, publish defect events over MQTT, until Ctrl-C / SIGTERM."""
    from edge.errors import ConfigError  # noqa: PLC0415
    from edge.triggers.sources import WatchedFolder  # noqa: PLC0415
    from edge.triggers.video import video_frames  # noqa: PLC0415

    config = state.loaded().config
    stream: Path | int | None = video if video is not None else camera
    watch_dir = folder or config.triggers.watch_dir
    if watch_dir is None and stream is None:
        raise ConfigError(
            "no frame source",
            where="triggers.watch_dir",
            hint="pass --dir, --video or --camera, or set triggers.watch_dir",
        )
    service = wiring.inference_service(config)
    service.start()
    outbox = wiring.open_outbox(config)
    uplink = wiring.build_uplink(config, outbox) if config.uplink.enabled else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if uplink:
        uplink.start()
    pipeline = wiring.trigger_pipeline(config, service, outbox)
    try:
        if stream is not None:
            count = pipeline.run_stream(
                video_frames(stream, every_nth=every_nth), stop, mode=mode or "stream"
            )
            click.echo(f"processed {count} frame(s)")
            if uplink:
                uplink.wait_drained(config.uplink.connect_timeout_s * 2)
        elif watch_dir is not None:
            pipeline.run_folder(
                WatchedFolder(watch_dir), stop, mode=mode or config.triggers.folder_mode
            )
    except KeyboardInterrupt:
        pass
    finally:
        if uplink:
            uplink.stop()
        outbox.close()
