"""When does a model output become a defect event? Pure logic, no I/O.

Two modes, chosen per frame source (``triggers.*_mode``, ``camera.mode``):

``stream`` (a camera or video watching one scene): per defect class, a frame is a *hit* when
the class's probability reaches its threshold (``triggers.class_thresholds`` > the model
manifest's thresholds > ``triggers.default_threshold``). The class fires when at least N of the
last M frames were hits (debounce) and it has not fired within ``cooldown_s``; firing clears
that class's window.

``part`` (every frame shows a different part: uploads, the watched folder, a triggered
capture): no debounce and no cooldown. A part is defective when any defect class reaches its
threshold, and every defective part is exactly one decision, for its highest-scoring class.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edge.config.model import TriggerMode

__all__ = ["DefectDecision", "PartDecider", "Thresholds", "TriggerDecider", "TriggerMode"]


@dataclass(frozen=True)
class DefectDecision:
    label: str
    score: float
    hits: int
    window: int
    classes: tuple[str, ...] = ()  # part mode: every defect class over its threshold


@dataclass
class Thresholds:
    ok_label: str
    per_class: dict[str, float]
    default: float

    def hit(self, label: str, score: float) -> bool:
        return label != self.ok_label and score >= self.per_class.get(label, self.default)


@dataclass
class PartDecider:
    """Part mode: one decision per defective part, nothing remembered between parts."""

    thresholds: Thresholds
    decisions_total: dict[str, int] = field(default_factory=dict)

    def observe(self, scores: dict[str, float]) -> DefectDecision | None:
        over = sorted(
            (
                (score, label)
                for label, score in scores.items()
                if self.thresholds.hit(label, score)
            ),
            reverse=True,
        )
        if not over:
            return None
        score, label = over[0]
        self.decisions_total[label] = self.decisions_total.get(label, 0) + 1
        return DefectDecision(label, score, 1, 1, tuple(name for _, name in over))


@dataclass
class TriggerDecider:
    """Stream mode: N-of-M debounce and cooldown per class."""

    ok_label: str
    thresholds: dict[str, float]
    default_threshold: float
    hits_needed: int
    window: int
    cooldown_s: float
    _recent: dict[str, deque[bool]] = field(default_factory=dict)
    _last_fired: dict[str, float] = field(default_factory=dict)
    decisions_total: dict[str, int] = field(default_factory=dict)

    def threshold_for(self, label: str) -> float:
        return self.thresholds.get(label, self.default_threshold)

    def observe(self, scores: dict[str, float], now_s: float) -> list[DefectDecision]:
        """Feed one frame's class probabilities; the classes that fire on it."""
        fired = []
        for label, score in scores.items():
            if label == self.ok_label:
                continue
            recent = self._recent.setdefault(label, deque(maxlen=self.window))
            recent.append(score >= self.threshold_for(label))
            hits = sum(recent)
            last = self._last_fired.get(label)
            cooling = last is not None and now_s - last < self.cooldown_s
            if hits >= self.hits_needed and not cooling:
                fired.append(DefectDecision(label, score, hits, len(recent)))
                self._last_fired[label] = now_s
                recent.clear()
                self.decisions_total[label] = self.decisions_total.get(label, 0) + 1
        return fired
