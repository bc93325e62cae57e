"""``TextEnum`` behaves as ``enum.StrEnum`` on every Python the device runs (3.10 on JetPack 6,
3.11+ elsewhere): the same test passes on both, each exercising its own implementation."""

from __future__ import annotations

import json
from enum import auto

from edge.doctor import Status
from edge.text_enum import TextEnum


class Colour(TextEnum):
    RED = "red"
    DARK_BLUE = auto()


def test_a_member_prints_and_formats_as_its_value() -> None:
    assert str(Colour.RED) == "red"
    assert f"{Colour.RED}" == "red"
    assert f"{Colour.RED:>5}|" == "  red|"
    assert "%s" % Colour.RED == "red"  # noqa: UP031 - the old formatting path too
    assert f"status {Status.OK}" == f"status {Status.OK.value}"


def test_a_member_is_the_string_it_holds() -> None:
    assert Colour.RED == "red" and isinstance(Colour.RED, str)
    assert Colour("red") is Colour.RED
    assert json.dumps({"colour": Colour.RED}) == '{"colour": "red"}'
    assert Colour.RED.upper() == "RED"


def test_auto_gives_the_lowercase_name_as_on_python_3_11() -> None:
    assert Colour.DARK_BLUE.value == "dark_blue"
