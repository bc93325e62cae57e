"""``moltbot listen`` and ``moltbot voice devices``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from edge.cli import CliState


@click.command()
@click.option(
    "--wav",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Recognise a WAV file instead of the microphone.",
)
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Recognise raw 16 kHz mono s16le PCM from standard input.",
)
@click.option("--publish", is_flag=True, help="Queue a voice event for each recognised command.")
@click.pass_obj
def listen(state: CliState, wav: Path | None, from_stdin: bool, publish: bool) -> None:
    """Print partial results and intents as they are heard (Ctrl-C to stop)."""
    from edge.outbox_cli import open_outbox  # noqa: PLC0415
    from edge.voice.audio import MicrophoneSource, StdinPcmSource, WavSource  # noqa: PLC0415
    from edge.voice.service import VoiceService, voice_event  # noqa: PLC0415

    config = state.loaded().config
    outbox = open_outbox(config)

    def no_action(_utterance: Any) -> dict[str, Any]:
        return {"ok": True, "note": "moltbot listen reports; the running appliance acts"}

    try:
        service = VoiceService(config.voice, config.paths().vosk_model_dir, outbox, no_action)
        source = (
            WavSource(wav)
            if wav
            else StdinPcmSource()
            if from_stdin
            else MicrophoneSource(config.voice.input_device)
        )
        listener = service.listener(on_partial=lambda text: click.echo(f"… {text}", err=True))
        for utterance in listener.utterances(source, threading.Event()):
            event = service.handle(utterance) if publish else None
            click.echo(json.dumps(event or voice_event(utterance), ensure_ascii=False))
    except KeyboardInterrupt:
        pass
    finally:
        outbox.close()


@click.group()
def voice() -> None:
    """Audio devices for voice commands."""


@voice.command("devices")
def voice_devices() -> None:
    """List the audio input devices PortAudio sees (index, name, native rate)."""
    from edge.voice.audio import input_devices  # noqa: PLC0415

    devices = input_devices()
    if not devices:
        click.echo("no audio input devices")
    for index, name, rate in devices:
        click.echo(f"{index:>3}  {name}  ({rate} Hz)")
