"""Voice benchmark: our pipeline vs the bare Vosk loop on the same audio, same run.

Audio: the test commands spoken by espeak-ng (Korean), each followed by silence, as one 16 kHz
WAV. Reports the real-time factor (processing time / audio time) of our pipeline (resampling,
end-of-speech gate, Vosk, intent match) vs a bare ``KaldiRecognizer`` loop, grammar vs free
mode, and end-of-speech → intent latency with our gate vs Vosk's own endpointing (audio time
from the end of the spoken words to the decision, plus decoding). Goal: < 300 ms.
Writes bench/results/voice.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge.config.model import IntentSettings, VoiceSettings  # noqa: E402
from edge.voice.audio import WavSource  # noqa: E402
from edge.voice.recognizer import Recognizer, _vosk, load_model  # noqa: E402
from edge.voice.service import VoiceService  # noqa: E402
from tests.support.speech import KOREAN_MODEL  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RATE = 16000
COMMANDS = ["검사 시작", "검사 중지", "모델 전환"]
GAP_S = 2.5
GOAL_MS = 300.0


def build_audio(workdir: Path, rounds: int) -> tuple[Path, list[float]]:
    """One WAV of commands with silence between; the audio times where each command ends."""
    pieces, ends, cursor = [], [], 0.0
    for index in range(rounds * len(COMMANDS)):
        text = COMMANDS[index % len(COMMANDS)]
        raw = workdir / f"{index}.raw"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(workdir / "s.wav"), text], check=True)
        subprocess.run(
            [
                "sox",
                "-q",
                str(workdir / "s.wav"),
                "-r",
                str(RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-t",
                "raw",
                str(raw),
                "silence",
                "-l",
                "1",
                "0.05",
                "1%",
                "reverse",
                "silence",
                "1",
                "0.05",
                "1%",
                "reverse",
            ],
            check=True,
        )
        speech = np.frombuffer(raw.read_bytes(), dtype="<i2")
        gap = np.zeros(int(GAP_S * RATE), dtype="<i2")
        cursor += GAP_S / 2
        pieces += [gap[: len(gap) // 2], speech, gap[len(gap) // 2 :]]
        cursor += len(speech) / RATE
        ends.append(cursor)
        cursor += GAP_S / 2
    path = workdir / "commands.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.concatenate(pieces).tobytes())
    return path, ends


def settings(mode: str) -> VoiceSettings:
    return VoiceSettings(
        enabled=True,
        model_dir=KOREAN_MODEL,
        mode=mode,
        intents={  # type: ignore[arg-type]
            f"c{i}": IntentSettings(phrases=[text], action="none")
            for i, text in enumerate(COMMANDS)
        },
    )


def ours(path: Path, mode: str, ends: list[float]) -> dict[str, float]:
    service = VoiceService(settings(mode), KOREAN_MODEL, outbox=None, act=lambda _u: {})  # type: ignore[arg-type]
    listener = service.listener()
    started = time.perf_counter()
    utterances = list(listener.utterances(WavSource(path)))
    elapsed = time.perf_counter() - started
    latencies = [u.end_of_speech_to_intent_ms for u in utterances if u.intent]
    return {
        "rtf": elapsed / audio_seconds(path),
        "intents": len(latencies),
        "latency_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_ms": percentile(latencies, 95),
    }


def bare(path: Path, ends: list[float]) -> dict[str, float]:
    """The plain Vosk loop: 100 ms chunks, Vosk's own endpointing decides when a phrase ends."""
    grammar = json.dumps([*COMMANDS, "[unk]"], ensure_ascii=False)
    recognizer = _vosk().KaldiRecognizer(load_model(KOREAN_MODEL), RATE, grammar)
    with wave.open(str(path)) as reader:
        data = reader.readframes(reader.getnframes())
    chunk = RATE // 10 * 2
    latencies, decode_ms = [], 0.0
    started = time.perf_counter()
    for offset in range(0, len(data), chunk):
        before = time.perf_counter()
        if recognizer.AcceptWaveform(data[offset : offset + chunk]):
            result = json.loads(recognizer.Result())
            decode_ms = (time.perf_counter() - before) * 1000
            heard_at = (offset + chunk) / 2 / RATE
            if result.get("text") in COMMANDS:
                spoken_end = max((e for e in ends if e <= heard_at), default=heard_at)
                latencies.append((heard_at - spoken_end) * 1000 + decode_ms)
    elapsed = time.perf_counter() - started
    return {
        "rtf": elapsed / audio_seconds(path),
        "intents": len(latencies),
        "latency_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_ms": percentile(latencies, 95),
    }


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: int) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def audio_seconds(path: Path) -> float:
    with wave.open(str(path)) as reader:
        return reader.getnframes() / reader.getframerate()


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rss_before = resident_mb()
    Recognizer(load_model(KOREAN_MODEL), RATE, COMMANDS)
    model_mb = resident_mb() - rss_before
    with tempfile.TemporaryDirectory() as scratch:
        path, ends = build_audio(Path(scratch), rounds=4)
        rows = {
            "ours_grammar": ours(path, "grammar", ends),
            "ours_free": ours(path, "free", ends),
            "bare_vosk_grammar": bare(path, ends),
        }
        seconds = audio_seconds(path)
    report = {
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "audio_seconds": seconds,
        "commands": len(ends),
        "rows": rows,
        "rtf_ratio_ours_vs_bare": rows["ours_grammar"]["rtf"] / rows["bare_vosk_grammar"]["rtf"],
        "voice_model_rss_mb": model_mb,
        "goal_latency_ms": GOAL_MS,
    }
    (RESULTS / "voice.json").write_text(json.dumps(report, indent=2))
    print(f"{len(ends)} commands in {seconds:.1f} s of audio")
    print(f"{'pipeline':<20} {'RTF':>6} {'intents':>8} {'EoS→intent p50':>15} {'p95':>8}")
    for name, row in rows.items():
        print(
            f"{name:<20} {row['rtf']:>6.3f} {row['intents']:>8.0f} "
            f"{row['latency_p50_ms']:>13.0f}ms {row['latency_p95_ms']:>6.0f}ms"
        )
    verdict = "OK" if rows["ours_grammar"]["latency_p95_ms"] < GOAL_MS else "OVER GOAL"
    settings_ms = VoiceSettings().end_of_speech_silence_ms
    print(
        f"RTF ratio ours/bare {report['rtf_ratio_ours_vs_bare']:.2f}; Vosk model + recogniser "
        f"≈ {model_mb:.0f} MB resident; end-of-speech gate {settings_ms} ms; goal "
        f"{GOAL_MS:.0f} ms: {verdict}"
    )


if __name__ == "__main__":
    main()
