"""The real clock's NTP trust: read cheaply on every stored event, asked of systemd rarely."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.outbox import clock
from edge.outbox.clock import SystemClock


def test_an_unsynchronised_clock_asks_timedatectl_at_most_every_30_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    answers = iter([False, False, True])
    monkeypatch.setattr(
        clock, "_timedatectl_says_synchronized", lambda: asked.append(1) or next(answers)
    )
    now = [1000.0]
    system = SystemClock(
        tmp_path / "synchronized", trust_without_sync=False, monotonic=lambda: now[0]
    )
    assert not any(system.wall_is_trusted() for _ in range(1000))  # a burst of stored events
    assert len(asked) == 1
    now[0] += 31
    assert not system.wall_is_trusted()
    assert len(asked) == 2
    (tmp_path / "synchronized").touch()  # timesyncd's flag is read on every call
    assert system.wall_is_trusted()
    assert len(asked) == 2
    (tmp_path / "synchronized").unlink()
    assert system.wall_is_trusted()  # latched for the rest of the boot


def test_a_clock_that_syncs_is_trusted_at_the_next_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([False, True])
    monkeypatch.setattr(clock, "_timedatectl_says_synchronized", lambda: next(answers))
    now = [0.0]
    system = SystemClock(tmp_path / "flag", trust_without_sync=False, monotonic=lambda: now[0])
    assert not system.wall_is_trusted()
    now[0] += SystemClock.TIMEDATECTL_EVERY_S
    assert system.wall_is_trusted()
