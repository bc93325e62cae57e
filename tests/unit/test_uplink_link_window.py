"""The link process's in-flight window (``link_window``): paho's limit and order, kept in
O(1) per acknowledgement."""

from __future__ import annotations

import pytest

from edge.uplink.link_window import PublishWindow, WaitingPublish


def waiting(ident: int, qos: int = 1) -> WaitingPublish:
    return WaitingPublish(ident, "t", b"x", qos, False, None)


def fill(window: PublishWindow, count: int) -> list[int]:
    """Offers ``count`` QoS 1 publishes as the link server does; the ids sent at once."""
    sent = []
    for ident in range(count):
        if window.is_full_for(1):
            window.wait(waiting(ident))
        else:
            window.sent()
            sent.append(ident)
    return sent


def test_at_most_limit_are_in_flight_and_the_rest_wait_in_order() -> None:
    window = PublishWindow(8)
    assert fill(window, 20) == list(range(8))
    assert (window.in_flight, window.waiting()) == (8, 12)
    assert window.next_ready() is None  # no room yet
    released = []
    for _ in range(12):
        window.acknowledged()
        ready = window.next_ready()
        assert ready is not None and window.next_ready() is None  # one ack, one room
        released.append(ready.ident)
    assert released == list(range(8, 20))
    assert (window.in_flight, window.waiting()) == (8, 0)


def test_nothing_overtakes_what_waits_even_when_an_ack_made_room() -> None:
    window = PublishWindow(2)
    fill(window, 3)
    window.acknowledged()  # room for one, but publish 2 still waits
    assert window.is_full_for(1)
    assert not window.is_full_for(0)  # QoS 0 never waits, as in paho


@pytest.mark.parametrize("limit", [0, 1, 64])
def test_a_limit_of_zero_means_none_and_qos_0_is_never_counted(limit: int) -> None:
    window = PublishWindow(limit)
    sent = fill(window, 100)
    assert len(sent) == (100 if limit == 0 else limit)
    assert not window.is_full_for(0)


def test_a_larger_limit_lets_waiting_publishes_go() -> None:
    window = PublishWindow(1)
    fill(window, 4)
    window.set_limit(3)
    ready = [window.next_ready(), window.next_ready()]
    assert [r.ident for r in ready if r is not None] == [1, 2]
    assert window.next_ready() is None  # the third still has no room (1 + 2 released = 3)
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        window.set_limit(-1)


def test_max_queued_counts_in_flight_and_waiting_as_paho_does() -> None:
    window = PublishWindow(2, max_queued=5)
    fill(window, 5)
    assert not window.has_room_to_queue()
    window.acknowledged()
    assert window.has_room_to_queue()
    assert PublishWindow(2, max_queued=0).has_room_to_queue()


def test_clearing_forgets_the_client_and_returns_what_waited() -> None:
    window = PublishWindow(2)
    fill(window, 5)
    assert [p.ident for p in window.clear()] == [2, 3, 4]
    assert (window.in_flight, window.waiting()) == (0, 0)
    window.acknowledged()  # a late ack of the old client never goes below zero
    assert window.in_flight == 0


@pytest.mark.parametrize(
    ("limit", "receive_maximum", "in_flight"), [(64, 20, 20), (8, 20, 8), (0, 20, 20), (64, 0, 64)]
)
def test_the_brokers_receive_maximum_caps_the_window(
    limit: int, receive_maximum: int, in_flight: int
) -> None:
    window = PublishWindow(limit)
    window.set_broker_limit(receive_maximum)
    assert fill(window, 100) == list(range(in_flight))
    window.set_broker_limit(0)  # the next connection's broker names none
    assert window.effective_limit == limit


def test_first_publishes_go_ahead_of_the_waiting_backlog_in_their_own_order() -> None:
    window = PublishWindow(2)
    fill(window, 6)  # 0, 1 in flight; 2-5 wait
    assert window.is_full_for(1, first=True)  # the window is full: it waits too ...
    window.wait(waiting(100), first=True)
    window.wait(waiting(101), first=True)
    assert window.is_full_for(1, first=True)  # ... and a later one waits behind it
    window.acknowledged()
    window.acknowledged()
    released = [window.next_ready(), window.next_ready()]
    assert [r.ident for r in released if r is not None] == [100, 101]  # ... but before 2-5
    assert window.waiting() == 4
    window.acknowledged()
    ready = window.next_ready()
    assert ready is not None and ready.ident == 2


def test_a_first_publish_with_room_goes_at_once_past_a_backlog_that_waits() -> None:
    window = PublishWindow(2)
    fill(window, 4)
    window.acknowledged()  # room for one; the backlog's next is not released yet
    assert window.is_full_for(1)  # a backlog publish keeps its place in the queue
    assert not window.is_full_for(1, first=True)  # a live one takes the room


def test_dropping_what_waits_keeps_what_is_in_flight_counted() -> None:
    window = PublishWindow(2)
    fill(window, 5)
    window.wait(waiting(100), first=True)
    assert [p.ident for p in window.drop_waiting()] == [100, 2, 3, 4]
    assert (window.in_flight, window.waiting()) == (2, 0)
    assert window.is_full_for(1)  # the two in flight still hold the window
