"""Audio sources behind one interface: chunks of 16 kHz mono int16 PCM.

A WAV file (any rate, 8/16/32-bit, mono or stereo), raw PCM on stdin, or a microphone through
sounddevice (PortAudio) at whatever rate the device offers, resampled here.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from edge.errors import AudioInputError, DependencyMissingError, VoiceError
from edge.voice.resample import StreamResampler, to_int16_bytes, to_mono_float

RATE = 16_000
CHUNK_S = 0.1
DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


class AudioSource(Protocol):
    name: str

    def chunks(self) -> Iterator[bytes]:
        """16 kHz mono int16 little-endian PCM, ~100 ms at a time, until the source ends."""
        ...


class WavSource:
    def __init__(self, path: Path | BinaryIO, name: str | None = None) -> None:
        self.path = path
        self.name = name or (path.name if isinstance(path, Path) else "upload.wav")

    def chunks(self) -> Iterator[bytes]:
        where = str(self.path) if isinstance(self.path, Path) else self.name
        try:
            target = str(self.path) if isinstance(self.path, Path) else self.path
            reader = wave.open(target, "rb")  # noqa: SIM115 - closed below
        except (wave.Error, EOFError, OSError) as exc:
            extensible = "65534" in str(exc)
            raise AudioInputError(
                "WAV uses WAVE_FORMAT_EXTENSIBLE (24/32-bit or multichannel), which is not "
                "supported"
                if extensible
                else f"not a readable WAV file: {exc}",
                where=where,
                hint="convert it to 16-bit PCM: sox in.wav -b 16 out.wav"
                if extensible
                else "send a PCM WAV (e.g. sox in.mp3 -r 16000 -c 1 out.wav)",
            ) from exc
        with reader:
            width, channels, rate = (
                reader.getsampwidth(),
                reader.getnchannels(),
                reader.getframerate(),
            )
            if width not in DTYPES or reader.getcomptype() != "NONE":
                raise AudioInputError(
                    f"unsupported WAV: {8 * width}-bit {reader.getcomptype()}",
                    where=where,
                    hint="use 8-, 16- or 32-bit PCM",
                )
            if rate < 8000 or channels < 1:
                raise AudioInputError(
                    f"unsupported WAV: {rate} Hz, {channels} channels",
                    where=where,
                    hint="use 8 kHz or more",
                )
            resampler = StreamResampler(rate, RATE)
            frames_per_chunk = int(rate * CHUNK_S)
            while block := reader.readframes(frames_per_chunk):
                samples = np.frombuffer(block, dtype=DTYPES[width])
                samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
                yield to_int16_bytes(resampler.process(to_mono_float(samples, width)))


class StdinPcmSource:
    """Raw 16 kHz mono s16le on standard input (e.g. ``arecord -f S16_LE -r 16000 -c 1 |``)."""

    name = "stdin"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdin.buffer

    def chunks(self) -> Iterator[bytes]:
        size = int(RATE * CHUNK_S) * 2
        while block := self.stream.read(size):
            yield block[: len(block) - len(block) % 2]


def _sounddevice() -> Any:
    try:
        import sounddevice  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyMissingError(
            "the microphone needs sounddevice", hint="pip install 'moltbot-edge[voice]'"
        ) from exc
    except OSError as exc:
        raise DependencyMissingError(
            f"PortAudio is missing: {exc}", hint="apt-get install libportaudio2"
        ) from exc
    return sounddevice


def refresh_devices() -> None:
    """Make PortAudio list devices anew: it enumerates once, so a microphone plugged in later
    (or a sound server started later) is otherwise never seen."""
    sd = _sounddevice()
    sd._terminate()  # sounddevice has no public call to rescan devices
    sd._initialize()


def input_devices() -> list[tuple[int, str, int]]:
    """(index, name, default sample rate) of every input device PortAudio sees."""
    sd = _sounddevice()
    return [
        (index, str(device["name"]), int(device["default_samplerate"]))
        for index, device in enumerate(sd.query_devices())
        if device.get("max_input_channels", 0) > 0
    ]


def find_device(wanted: str | None) -> tuple[int | None, int]:
    """The device index (None: PortAudio's default) and its native rate."""
    devices = input_devices()
    listing = "; ".join(f"{i}: {name}" for i, name, _ in devices) or "none"
    if not devices:
        raise VoiceError(
            "no audio input device found",
            where="voice.input_device",
            hint="plug in a USB microphone; `moltbot voice devices` lists inputs",
        )
    if wanted is None:
        default = _sounddevice().default.device[0]
        for index, _name, rate in devices:
            if index == default:
                return index, rate
        return devices[0][0], devices[0][2]
    for index, name, rate in devices:
        if wanted == str(index) or wanted.lower() in name.lower():
            return index, rate
    raise VoiceError(
        f"no input device matches {wanted!r}",
        where="voice.input_device",
        hint=f"input devices: {listing}",
    )


class MicrophoneSource:
    def __init__(self, device: str | None) -> None:
        self.index, self.native_rate = find_device(device)
        self.name = f"mic{self.index}"
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=200)

    def chunks(self) -> Iterator[bytes]:
        sd = _sounddevice()
        rate = self._open_rate(sd)
        resampler = StreamResampler(rate, RATE)

        def callback(data: Any, _frames: int, _time: Any, status: Any) -> None:
            del status  # overflows show up as gaps; the VAD copes
            with contextlib.suppress(queue.Full):  # fell behind: drop audio, never block PortAudio
                self._queue.put_nowait(bytes(data))

        try:
            stream = sd.RawInputStream(
                samplerate=rate,
                blocksize=int(rate * CHUNK_S),
                device=self.index,
                channels=1,
                dtype="int16",
                callback=callback,
            )
        except Exception as exc:  # PortAudioError: busy or vanished device
            raise VoiceError(
                f"cannot open input device {self.index}: {exc}",
                where="voice.input_device",
                hint="is another program using it? `moltbot voice devices`",
            ) from exc
        with stream:
            while True:
                try:
                    block = self._queue.get(timeout=5)
                except queue.Empty as exc:
                    raise VoiceError(
                        "the microphone stopped delivering audio",
                        where=self.name,
                        hint="check the USB connection",
                    ) from exc
                samples = np.frombuffer(block, dtype="<i2").astype(np.float32) / 32768.0
                yield to_int16_bytes(resampler.process(samples))

    def _open_rate(self, sd: Any) -> int:
        try:
            sd.check_input_settings(device=self.index, samplerate=RATE, channels=1, dtype="int16")
        except Exception:  # noqa: BLE001 - cannot do 16 kHz: take its own rate and resample
            return self.native_rate
        return RATE
