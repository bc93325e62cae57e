"""``moltbot listen`` and ``moltbot voice devices``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from edge.cli.context import CliState


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
    from edge import wiring  # noqa: PLC0415
    from edge.voice.audio import MicrophoneSource, StdinPcmSource, WavSource  # noqa: PLC0415
    from edge.voice.service import voice_event  # noqa: PLC0415

    config = state.loaded().config
    outbox = wiring.open_outbox(config)

    def no_action(_utterance: Any) -> dict[str, Any]:
        return {"ok": True, "note": "moltbot listen reports; the running appliance acts"}

    try:
        service = wiring.voice_service(config, outbox, no_action)
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
    """Audio devices and phrases for voice commands."""


@voice.command("check")
@click.argument("phrases", nargs=-1)
@click.pass_obj
def voice_check(state: CliState, phrases: tuple[str, ...]) -> None:
    """Are PHRASES (default: the configured ones) in the model's vocabulary and told apart?

    Each phrase is spoken by espeak-ng at 3 rates x 2 pitches and decoded with the configured
    phrases, the checked ones and the fillers. Exit 2 when a word is missing or a phrase is
    heard as another or as itself less than 5 times in 6.
    """
    from edge.voice.intent_sets import phrases_of, resolve_intents  # noqa: PLC0415
    from edge.voice.phrase_check import GOOD_RECALL, NOTHING, check_phrases  # noqa: PLC0415

    config = state.loaded().config
    model_dir = config.paths().vosk_model_dir
    wanted = list(phrases) or phrases_of(resolve_intents(config.voice, model_dir).intents)
    reports = check_phrases(config.voice, model_dir, wanted)
    bad = False
    for report in reports:
        if report.missing_words:
            bad = True
            missing = ", ".join(report.missing_words)
            click.echo(f"{report.phrase!r}: NOT IN VOCABULARY: {missing}")
            continue
        if report.recall is None:
            click.echo(f"{report.phrase!r}: in vocabulary (install espeak-ng and sox to test it)")
            continue
        confusions = ", ".join(f"{k!r} x{v}" for k, v in report.confusions.items()) or "none"
        bad |= report.recall < GOOD_RECALL or any(k != NOTHING for k in report.confusions)
        click.echo(
            f"{report.phrase!r}: in vocabulary; heard as itself {report.heard[report.phrase]}"
            f"/{report.trials}; otherwise: {confusions}"
        )
    if bad:
        raise SystemExit(2)


@voice.command("devices")
def voice_devices() -> None:
    """List the audio input devices PortAudio sees (index, name, native rate)."""
    from edge.voice.audio import input_devices  # noqa: PLC0415

    devices = input_devices()
    if not devices:
        click.echo("no audio input devices")
    for index, name, rate in devices:
        click.echo(f"{index:>3}  {name}  ({rate} Hz)")
