"""Audio → utterances → intents, with our end-of-speech detection and per-utterance timings."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from edge.voice.audio import RATE, AudioSource
from edge.voice.endpointing import (
    FRAME_BYTES,
    FRAME_MS,
    Boundary,
    Endpointer,
    SpeechProbability,
    silero_detector,
)
from edge.voice.intents import IntentMatch, IntentMatcher
from edge.voice.recognizer import Recognition, Recognizer

logger = logging.getLogger(__name__)
PRE_ROLL_FRAMES = 10  # 320 ms before the detected onset go to the recogniser too


@dataclass(frozen=True)
class Utterance:
    recognition: Recognition
    intent: IntentMatch | None
    speech_ms: int
    endpoint_ms: int  # audio time from the last speech frame to our end-of-speech decision
    decode_ms: float  # wall time from that decision to the intent

    @property
    def end_of_speech_to_intent_ms(self) -> float:
        return self.endpoint_ms + self.decode_ms


class VoiceListener:
    def __init__(
        self,
        recognizer: Recognizer,
        matcher: IntentMatcher,
        silence_ms: int,
        *,
        on_partial: Callable[[str], None] | None = None,
        detector: SpeechProbability | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.matcher = matcher
        self.silence_ms = silence_ms
        self.on_partial = on_partial
        self.detector = detector or silero_detector()

    def utterances(
        self, source: AudioSource, stop: threading.Event | None = None
    ) -> Iterator[Utterance]:
        endpointer = Endpointer(self.detector, silence_ms=self.silence_ms)
        end_ms = endpointer.silence_frames * FRAME_MS
        pre_roll: deque[bytes] = deque(maxlen=PRE_ROLL_FRAMES)
        pending = b""
        speech_frames = 0
        last_partial = ""
        for chunk in source.chunks():
            if stop is not None and stop.is_set():
                return
            pending += chunk
            while len(pending) >= FRAME_BYTES:
                frame, pending = pending[:FRAME_BYTES], pending[FRAME_BYTES:]
                boundary = endpointer.frame(frame)
                if boundary == Boundary.START:
                    for earlier in pre_roll:
                        self.recognizer.accept(earlier)
                    speech_frames = len(pre_roll)
                    pre_roll.clear()
                if endpointer.in_speech or boundary == Boundary.END:
                    partial = self.recognizer.accept(frame)
                    speech_frames += 1
                    if partial and partial != last_partial and self.on_partial:
                        self.on_partial(partial)
                    last_partial = partial
                else:
                    pre_roll.append(frame)
                if boundary == Boundary.END:
                    yield self._finish(speech_frames, end_ms)
                    speech_frames, last_partial = 0, ""
        if endpointer.in_speech:  # the source ended mid-utterance
            yield self._finish(speech_frames, 0)

    def _finish(self, frames: int, endpoint_ms: int) -> Utterance:
        decided_from = time.perf_counter()
        recognition = self.recognizer.final()
        intent = self.matcher.match(recognition.words, recognition.alternatives)
        decode_ms = (time.perf_counter() - decided_from) * 1000
        speech_ms = frames * FRAME_MS - endpoint_ms
        logger.info("heard %r -> %s", recognition.text, intent.intent if intent else "no action")
        return Utterance(recognition, intent, max(0, speech_ms), endpoint_ms, decode_ms)


def speech_seconds(pcm_bytes: int) -> float:
    return pcm_bytes / 2 / RATE
