"""Thresholds, N-of-M debounce and cooldown of the defect trigger."""

from __future__ import annotations

from edge.triggers.decision import PartDecider, Thresholds, TriggerDecider


def decider(**overrides: object) -> TriggerDecider:
    options: dict = {
        "ok_label": "ok",
        "thresholds": {"scratch": 0.6},
        "default_threshold": 0.5,
        "hits_needed": 2,
        "window": 3,
        "cooldown_s": 10.0,
    }
    return TriggerDecider(**(options | overrides))


def scratch(score: float) -> dict[str, float]:
    return {"ok": 1 - score, "scratch": score, "spot": 0.0}


def test_a_single_hit_does_not_fire_with_two_of_three_debounce() -> None:
    trigger = decider()
    assert trigger.observe(scratch(0.9), 0) == []
    assert trigger.observe(scratch(0.1), 1) == []
    fired = trigger.observe(scratch(0.8), 2)
    assert [(d.label, d.hits, d.window) for d in fired] == [("scratch", 2, 3)]


def test_hits_outside_the_window_do_not_count() -> None:
    trigger = decider()
    trigger.observe(scratch(0.9), 0)
    trigger.observe(scratch(0.1), 1)
    trigger.observe(scratch(0.1), 2)
    assert trigger.observe(scratch(0.9), 3) == []  # the first hit fell out of the window


def test_cooldown_silences_the_same_class_then_lets_it_fire_again() -> None:
    trigger = decider(hits_needed=1, window=1)
    assert trigger.observe(scratch(0.9), 0)
    assert trigger.observe(scratch(0.9), 5) == []
    assert trigger.observe(scratch(0.9), 10.5)
    assert trigger.decisions_total == {"scratch": 2}


def test_per_class_threshold_beats_the_default() -> None:
    trigger = decider(hits_needed=1, window=1)
    assert trigger.observe(scratch(0.55), 0) == []  # scratch needs 0.6
    assert [d.label for d in trigger.observe({"ok": 0.45, "spot": 0.55}, 1)] == ["spot"]


def test_the_ok_class_never_fires() -> None:
    trigger = decider(hits_needed=1, window=1)
    assert trigger.observe({"ok": 1.0, "scratch": 0.0}, 0) == []


# -- part mode: every frame is its own part ------------------------------------------------


def parts(**overrides: object) -> PartDecider:
    thresholds: dict = {"ok_label": "ok", "per_class": {"scratch": 0.6}, "default": 0.5}
    return PartDecider(Thresholds(**(thresholds | overrides)))


def test_every_defective_part_in_a_row_is_one_decision_without_debounce_or_cooldown() -> None:
    decider = parts()
    decisions = [decider.observe(scratch(0.9)) for _ in range(5)]
    assert [d.label if d else None for d in decisions] == ["scratch"] * 5
    assert decider.decisions_total == {"scratch": 5}


def test_a_good_part_between_defective_ones_changes_nothing_for_the_next() -> None:
    decider = parts()
    assert decider.observe(scratch(0.9)) is not None
    assert decider.observe(scratch(0.1)) is None
    assert decider.observe(scratch(0.9)) is not None


def test_a_part_with_two_defect_classes_is_one_decision_for_the_highest_score() -> None:
    decision = parts().observe({"ok": 0.0, "scratch": 0.7, "spot": 0.8})
    assert decision is not None
    assert (decision.label, decision.classes) == ("spot", ("spot", "scratch"))


def test_part_mode_uses_the_per_class_threshold_and_never_fires_on_ok() -> None:
    decider = parts()
    assert decider.observe(scratch(0.55)) is None  # scratch needs 0.6
    assert decider.observe({"ok": 1.0, "scratch": 0.0}) is None
