"""Pure decisions of the outbox and uplink: eviction order, backoff, clocks."""

from __future__ import annotations

import random

from edge.outbox.clock import ClockCheckpoint, ElapsedClock, corrected_wall_time
from edge.outbox.eviction import StoredEntry, choose_victims
from edge.uplink.sync import backoff_delay
from tests.support.fake_clock import FakeClock


def entries(*spec: tuple[int, int]) -> list[StoredEntry]:
    return [StoredEntry(seq, priority, 10) for seq, priority in spec]


def test_victims_are_lowest_priority_then_oldest() -> None:
    stored = entries((1, 30), (2, 0), (3, 10), (4, 0), (5, 10))
    assert [v.seq for v in choose_victims(stored, 25, 30) or []] == [2, 4, 3]


def test_no_victims_above_the_incoming_priority() -> None:
    assert choose_victims(entries((1, 30), (2, 30)), 10, 0) is None
    assert [v.seq for v in choose_victims(entries((1, 30), (2, 0)), 10, 0) or []] == [2]


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 1.0, 60.0, rng) for n in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(60.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_elapsed_clock_continues_across_processes_of_one_boot() -> None:
    clock = FakeClock(boottime_s=1000.0)
    checkpoint = ClockCheckpoint(
        "boot-1", boottime=900.0, elapsed=5000.0, wall=0, wall_trusted=True
    )
    assert ElapsedClock(clock, checkpoint).now() == 5100.0


def test_elapsed_clock_ignores_the_wall_clock_when_it_is_not_trusted() -> None:
    clock = FakeClock(boottime_s=10.0, current_boot_id="boot-2", trusted=False)
    checkpoint = ClockCheckpoint(
        "boot-1", 900.0, 5000.0, wall=clock.wall_s + 9e6, wall_trusted=True
    )
    assert ElapsedClock(clock, checkpoint).now() == 5010.0


def test_trusted_timestamps_are_used_as_they_are() -> None:
    clock = FakeClock(trusted=False)
    assert corrected_wall_time(
        created_wall=5.0,
        created_boottime=1.0,
        created_boot_id="x",
        created_trusted=True,
        source=clock,
    ) == (5.0, "wall")


def test_timestamps_from_an_earlier_boot_stay_marked_unsynced() -> None:
    clock = FakeClock(trusted=True, current_boot_id="boot-2")
    assert corrected_wall_time(
        created_wall=5.0,
        created_boottime=1.0,
        created_boot_id="boot-1",
        created_trusted=False,
        source=clock,
    ) == (5.0, "unsynced")
