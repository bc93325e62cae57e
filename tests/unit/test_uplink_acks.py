"""The PUBACK hand-off between paho's network thread and the uplink worker."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge.uplink.acks import WAKE_BATCH, AckInbox

OK = ReasonCode(PacketTypes.PUBACK, "Success")


def test_with_plenty_in_flight_the_worker_is_woken_once_per_batch() -> None:
    wakes: list[int] = []
    inbox = AckInbox(lambda: wakes.append(1))
    assert not inbox.expect(in_flight=1000)
    for mid in range(1, 3 * WAKE_BATCH):
        inbox.add(mid, OK)
    assert len(wakes) == 1  # not one per acknowledgement
    assert [mid for mid, _ in inbox.take()] == list(range(1, 3 * WAKE_BATCH))
    assert inbox.take() == []


def test_with_one_message_in_flight_its_ack_wakes_the_worker_at_once() -> None:
    wakes: list[int] = []
    inbox = AckInbox(lambda: wakes.append(1))
    inbox.expect(in_flight=1)
    inbox.add(7, OK)
    assert wakes == [1]


def test_acks_that_arrived_before_the_worker_waits_are_not_waited_for() -> None:
    inbox = AckInbox(lambda: None)
    inbox.expect(in_flight=1000)
    for mid in range(WAKE_BATCH):
        inbox.add(mid, OK)
    assert inbox.expect(in_flight=10)  # enough are here already: handle them, do not block
