"""The voice service: microphone → utterances → intents → actions and ``voice`` events."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config.model import VoiceSettings
from edge.errors import DependencyMissingError, VoiceError
from edge.outbox.store import Outbox
from edge.voice.audio import AudioSource, MicrophoneSource, refresh_devices
from edge.voice.intent_sets import grammar_of, resolve_intents
from edge.voice.intents import IntentMatcher
from edge.voice.listener import Utterance, VoiceListener
from edge.voice.recognizer import Recognizer, load_model

logger = logging.getLogger(__name__)
MICROPHONE_RETRY_S = 5.0

ActionHandler = Callable[[Utterance], dict[str, Any]]


def voice_event(utterance: Utterance, action_ms: float | None = None) -> dict[str, Any]:
    intent = utterance.intent
    return {
        "text": utterance.recognition.text,
        "intent": intent.intent if intent else None,
        "action": intent.action if intent else None,
        "confidence": round(intent.confidence, 4) if intent else None,
        "margin": round(m, 2) if intent and (m := intent.margin) is not None else None,
        "words": [
            {"word": w.text, "confidence": round(w.confidence, 4)}
            for w in utterance.recognition.words
        ],
        "timings_ms": {
            "speech": utterance.speech_ms,
            "end_of_speech_detection": utterance.endpoint_ms,
            "decode": round(utterance.decode_ms, 2),
            "end_of_speech_to_intent": round(utterance.end_of_speech_to_intent_ms, 2),
            "action": None if action_ms is None else round(action_ms, 2),
        },
    }


class VoiceService:
    def __init__(
        self, settings: VoiceSettings, model_dir: Path, outbox: Outbox, act: ActionHandler
    ) -> None:
        self.settings = settings
        grammar_mode = settings.mode == "grammar"
        self.resolved = resolve_intents(settings, model_dir)
        self.intents, self.fillers = self.resolved.intents, self.resolved.fillers
        self.matcher = IntentMatcher(
            self.intents,
            settings.min_confidence,
            settings.min_margin if grammar_mode else None,
            self.fillers,
        )
        self.grammar = grammar_of(self.matcher.phrases, self.fillers) if grammar_mode else None
        self.model = load_model(model_dir, self.grammar, self.resolved.vocabulary)
        self.outbox = outbox
        self.act = act
        self.observers: list[Callable[[Utterance], None]] = []
        self.microphone = "not started" if settings.microphone else "off (voice.microphone)"

    def listener(self, on_partial: Callable[[str], None] | None = None) -> VoiceListener:
        recognizer = Recognizer(self.model, 16_000, self.grammar)
        return VoiceListener(
            recognizer, self.matcher, self.settings.end_of_speech_silence_ms, on_partial=on_partial
        )

    def handle(self, utterance: Utterance) -> dict[str, Any] | None:
        """Act on a recognised command and queue its ``voice`` event; chatter does nothing."""
        for observer in self.observers:
            observer(utterance)
        if utterance.intent is None:
            return None
        decided = time.perf_counter()
        result = self.act(utterance)
        event = voice_event(utterance, (time.perf_counter() - decided) * 1000)
        event["result"] = result
        message = self.outbox.put("voice", event)
        event["timings_ms"]["intent_to_queued"] = round((time.perf_counter() - decided) * 1000, 2)
        event["event_id"] = message.id
        self.speak(utterance.intent.intent)
        return event

    def run(self, source: AudioSource, stop: threading.Event) -> None:
        for utterance in self.listener().utterances(source, stop):
            self.handle(utterance)

    def run_microphone(self, stop: threading.Event) -> None:
        """Listen until ``stop``; a missing or vanished microphone is waited for, not fatal."""
        reported = ""
        while not stop.is_set():
            try:
                if reported:  # looked before and found none: let PortAudio look again
                    refresh_devices()
                source = MicrophoneSource(self.settings.input_device)
                self.microphone = f"listening on {source.name}"
                self.run(source, stop)
            except (VoiceError, DependencyMissingError) as exc:
                self.microphone = f"missing: {exc.what}"
                if exc.what != reported:
                    logger.warning(
                        "voice: %s (%s); retrying every %.0f s",
                        exc.what,
                        exc.hint,
                        MICROPHONE_RETRY_S,
                    )
                    reported = exc.what
                stop.wait(MICROPHONE_RETRY_S)

    def speak(self, text: str) -> None:
        if not self.settings.spoken_feedback:
            return
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            logger.warning("voice.spoken_feedback is on but espeak-ng is not installed")
            return
        subprocess.Popen(  # noqa: S603 - fixed program, the intent name as text
            [espeak, text], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
