"""Voice benchmark: recall and confusions per phrase, false fires on chatter, end-of-speech →
intent latency in quiet and in factory noise, the two VADs, and resident memory.

Audio: the built-in Korean phrases spoken by espeak-ng at 3 speaking rates x 2 pitches, in quiet
and mixed with pink noise (15 dB SNR), brown noise (10 dB) and machine hum (10 dB) with noise
1 s before and after; 34 non-command sentences (greetings, sentences holding a command word,
single command words). Everything streams through the appliance's listener in 32 ms chunks (as
from a microphone), so latency is measured from the true end of the spoken words to the intent.
Compared in the same run: the bare Vosk loop (grammar of the phrases only, Vosk's own
endpointing) and WebRTC's VAD vs Silero's on noise. Writes bench/results/voice.json.
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge.config.model import VoiceSettings  # noqa: E402
from edge.voice.endpointing import FRAME_BYTES, silero_detector  # noqa: E402
from edge.voice.intent_sets import phrases_of  # noqa: E402
from edge.voice.model_view import grammar_view  # noqa: E402
from edge.voice.recognizer import _vosk, load_model  # noqa: E402
from edge.voice.service import VoiceService  # noqa: E402
from tests.support.speech import KOREAN_MODEL, factory_noise, in_noise, speak_as  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RATES, PITCHES = (130, 175, 220), (30, 70)
CONDITIONS = {"quiet": None, "pink_15db": ("pink", 15.0), "brown_10db": ("brown", 10.0)}
CONDITIONS["hum_10db"] = ("hum", 10.0)
CHATTER = [
    *[
        "안녕하세요",
        "감사합니다",
        "잠깐만요",
        "수고하셨습니다",
        "반갑습니다",
        "괜찮아요",
        "저기요",
        "알려줘",
    ],
    *("오늘 날씨가 좋네요", "점심 먹었어요", "내일 봐요", "이거 어디에 둬요", "모델이 뭐예요"),
    *(
        "검사 결과가 어때요",
        "시작했어요",
        "검사를 시작할까요",
        "중지하지 마세요",
        "보고서 어디 있어요",
    ),
    *("커피 한잔 할래요", "지금 몇 시예요", "회의실이 어디예요", "네 알겠습니다", "그만하세요"),
    *(
        "다시 말해 주세요",
        "시작이 반이다",
        "검사원이 왔어요",
        "잠시만 기다려 주세요",
        "여기 앉으세요",
    ),
    *("좋은 아침입니다", "검사", "시작", "중지", "보고", "해"),
]
GOAL_MS = 300.0
NOTHING = "(no command)"


class PacedPcm:
    """Raw PCM handed out 32 ms at a time, remembering how much the listener has taken."""

    name = "bench"

    def __init__(self, pcm: bytes) -> None:
        self.pcm, self.taken = pcm, 0

    def chunks(self) -> Iterator[bytes]:
        for offset in range(0, len(self.pcm), FRAME_BYTES):
            self.taken = offset + FRAME_BYTES
            yield self.pcm[offset : offset + FRAME_BYTES]


def hear(service: VoiceService, pcm: bytes, speech_end_s: float) -> tuple[str, float | None]:
    """The one command fired (or NOTHING) and end of speech → intent in ms."""
    source = PacedPcm(pcm)
    fired: list[tuple[str, float]] = []
    for utterance in service.listener().utterances(source):
        if utterance.intent:
            decided_s = min(source.taken, len(pcm)) / 2 / 16000
            fired.append(
                (utterance.intent.phrase, (decided_s - speech_end_s) * 1000 + utterance.decode_ms)
            )
    if len(fired) != 1:
        return (NOTHING if not fired else "+".join(f[0] for f in fired)), None
    return fired[0]


def audio(scratch: Path, text: str, rate: int, pitch: int, condition: str) -> tuple[bytes, float]:
    wav = speak_as(
        text, scratch / f"{abs(hash((text, rate, pitch)))}.wav", rate_wpm=rate, pitch=pitch
    )
    spec = CONDITIONS[condition]
    if spec is None:
        return in_noise(wav, "pink", 200.0)  # 200 dB SNR: silence around the words
    return in_noise(wav, spec[0], spec[1])


def phrase_rows(
    service: VoiceService, scratch: Path
) -> tuple[dict[str, object], dict[str, list[float]]]:
    phrases = phrases_of(service.intents)
    report: dict[str, object] = {}
    latencies: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    for phrase in phrases:
        per_condition = {}
        for condition in CONDITIONS:
            heard: Counter[str] = Counter()
            for rate, pitch in itertools.product(RATES, PITCHES):
                got, latency = hear(service, *audio(scratch, phrase, rate, pitch, condition))
                heard[got] += 1
                if got == phrase and latency is not None:
                    latencies[condition].append(latency)
            trials = sum(heard.values())
            per_condition[condition] = {
                "recall": heard[phrase] / trials,
                "confused_with": {k: v for k, v in heard.items() if k not in (phrase, NOTHING)},
                "missed": heard[NOTHING],
                "trials": trials,
            }
        report[phrase] = per_condition
    return report, latencies


def chatter_rows(service: VoiceService, scratch: Path) -> dict[str, object]:
    rows: dict[str, object] = {}
    for condition in ("quiet", "pink_15db"):
        fires = []
        for text in CHATTER:
            got, _ = hear(service, *audio(scratch, text, 175, 50, condition))
            if got != NOTHING:
                fires.append(f"{text} -> {got}")
        rows[condition] = {
            "utterances": len(CHATTER),
            "false_fires": fires,
            "rate": len(fires) / len(CHATTER),
        }
    return rows


def vad_rows() -> dict[str, dict[str, float]]:
    """Share of 30/32 ms frames each VAD calls speech, on 5 s of pure noise."""
    import webrtcvad  # noqa: PLC0415 - bench extra only

    rows = {}
    for kind in ("pink", "brown", "hum"):
        pcm = (factory_noise(kind, 5.0) * 3000).astype("<i2").tobytes()
        silero = silero_detector()
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES, FRAME_BYTES)]
        started = time.perf_counter()
        silero_share = float(np.mean([silero(f) >= 0.5 for f in frames]))
        silero_ms = (time.perf_counter() - started) * 1000 / len(frames)
        vad = webrtcvad.Vad(3)
        web = [vad.is_speech(pcm[i : i + 960], 16000) for i in range(0, len(pcm) - 960, 960)]
        rows[kind] = {
            "silero_speech_share": silero_share,
            "webrtc_mode3_speech_share": float(np.mean(web)),
            "silero_ms_per_frame": silero_ms,
        }
    return rows


def bare_vosk(scratch: Path, phrases: list[str]) -> dict[str, float]:
    """Vosk alone: grammar of the phrases, 100 ms chunks, its own endpointing decides."""
    model = load_model(KOREAN_MODEL)
    latencies = []
    for phrase, rate in itertools.product(phrases, RATES):
        pcm, end_s = audio(scratch, phrase, rate, 50, "quiet")
        pcm += bytes(32000 * 2)  # two more seconds of silence for Vosk's endpointing
        rec = _vosk().KaldiRecognizer(model, 16000, json.dumps(phrases, ensure_ascii=False))
        for offset in range(0, len(pcm), 3200):
            before = time.perf_counter()
            if rec.AcceptWaveform(pcm[offset : offset + 3200]):
                text = json.loads(rec.Result()).get("text")
                if text == phrase:
                    heard_s = (offset + 3200) / 2 / 16000
                    latencies.append(
                        (heard_s - end_s) * 1000 + (time.perf_counter() - before) * 1000
                    )
                break
    return summary(latencies)


MEMORY_PROBE = """
import json, sys, vosk
vosk.SetLogLevel(-1)
def rss():
    line = next(l for l in open('/proc/self/status') if l.startswith('VmRSS'))
    return int(line.split()[1]) / 1024
base = rss(); model = vosk.Model(sys.argv[1])
rec = vosk.KaldiRecognizer(model, 16000, json.dumps(sys.argv[2:], ensure_ascii=False))
print(rss() - base)
"""


def memory_rows(service: VoiceService, scratch: Path) -> dict[str, float]:
    """Resident MB of a Vosk model + recogniser, each in a fresh process."""
    from images.vosk_source import slim_for_grammar  # noqa: PLC0415

    slim = scratch / "slim"
    slim.mkdir()
    for entry in KOREAN_MODEL.iterdir():
        if entry.name != "graph":
            (slim / entry.name).symlink_to(entry)
    (slim / "graph").mkdir()
    for entry in (KOREAN_MODEL / "graph").iterdir():
        (slim / "graph" / entry.name).symlink_to(entry)
    slim_for_grammar(slim)
    grammar = service.grammar or []
    view = grammar_view(KOREAN_MODEL, grammar, service.resolved.vocabulary)

    def probe(folder: Path) -> float:
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(folder), *grammar],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return float(out.split()[-1])

    return {
        "as_published_mb": probe(KOREAN_MODEL),
        "image_slimmed_no_gr_fst_mb": probe(slim),
        "grammar_view_mb": probe(view),
        "published_disk_mb": sum(f.stat().st_size for f in KOREAN_MODEL.rglob("*") if f.is_file())
        / 2**20,
        "slimmed_disk_mb": sum(f.stat().st_size for f in slim.rglob("*") if f.is_file()) / 2**20,
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan")}
    return {
        "n": len(values),
        "p50_ms": statistics.median(values),
        "p95_ms": float(np.percentile(values, 95)),
    }


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = VoiceSettings(enabled=True, model_dir=KOREAN_MODEL)
    service = VoiceService(settings, KOREAN_MODEL, outbox=None, act=lambda _u: {})  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        started = time.perf_counter()
        phrases, latencies = phrase_rows(service, scratch)
        chatter = chatter_rows(service, scratch)
        report = {
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "grammar": {"phrases": phrases_of(service.intents), "fillers": service.fillers},
            "end_of_speech_silence_ms": settings.end_of_speech_silence_ms,
            "min_margin": settings.min_margin,
            "phrases": phrases,
            "chatter": chatter,
            "latency_end_of_speech_to_intent": {c: summary(v) for c, v in latencies.items()},
            "bare_vosk_own_endpointing_quiet": bare_vosk(scratch, phrases_of(service.intents)),
            "vad_on_noise": vad_rows(),
            "memory": memory_rows(service, scratch),
            "goal_latency_ms": GOAL_MS,
            "seconds": time.perf_counter() - started,
        }
    (RESULTS / "voice.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
