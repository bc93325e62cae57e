"""A user-space PulseAudio whose "microphone" is a FIFO: what is written there is what it hears.

These machines have no sound card; with libasound2-plugins PortAudio lists ALSA's ``pulse``
device, so the microphone path runs through real PortAudio, ALSA and PulseAudio. The source
yields nothing while no writer feeds it, so the feeder keeps writing silence around speech.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 3200  # 100 ms of 16 kHz mono s16le


@dataclass
class PulseMicrophone:
    runtime_dir: Path
    fifo: Path = field(init=False)
    _daemon: subprocess.Popen[bytes] | None = None
    _queue: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _feeder: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.fifo = self.runtime_dir / "mic.fifo"

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": str(self.runtime_dir)}

    def _pactl(self, *args: str) -> None:
        subprocess.run(
            [shutil.which("pactl") or "pactl", *args],
            check=True,
            capture_output=True,
            env=self.env | {"PATH": "/usr/bin:/bin"},
        )

    def start(self) -> None:
        binary = shutil.which("pulseaudio")
        if binary is None:
            raise RuntimeError("pulseaudio is missing: `make test` installs it")
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._daemon = subprocess.Popen(
            [
                binary,
                "--daemonize=no",
                "--exit-idle-time=-1",
                "-n",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink",
            ],
            env=self.env | {"PATH": "/usr/bin:/bin", "HOME": str(self.runtime_dir)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.runtime_dir / "pulse" / "native").exists():
            if time.monotonic() > deadline or self._daemon.poll() is not None:
                raise RuntimeError("PulseAudio did not start")
            time.sleep(0.05)
        self._pactl(
            "load-module",
            "module-pipe-source",
            "source_name=mic",
            f"file={self.fifo}",
            "format=s16le",
            "rate=16000",
            "channels=1",
        )
        self._pactl("set-default-source", "mic")
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def say(self, pcm: bytes) -> None:
        """Queue 16 kHz mono s16le audio; it is played in real time after what is queued."""
        with self._lock:
            self._queue.extend(
                pcm[i : i + CHUNK].ljust(CHUNK, b"\0") for i in range(0, len(pcm), CHUNK)
            )

    def _feed(self) -> None:
        with self.fifo.open("wb") as fifo:
            while not self._stop.is_set():
                with self._lock:
                    chunk = self._queue.pop(0) if self._queue else b"\0" * CHUNK
                fifo.write(chunk)
                fifo.flush()
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(5)
        if self._daemon is not None:
            self._daemon.terminate()
            self._daemon.wait(10)
