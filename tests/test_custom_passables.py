"""register_passable: custom types travel as Tagged values and come back; unpassable
values get an error that says what to do."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from collections.abc import Iterator
from typing import Any

import pytest

from captp import (
    DecodeError,
    E,
    PassStyleError,
    Tagged,
    check_passable,
    far,
    pass_style,
    register_passable,
    unregister_passable,
)
from captp.endo import Marshal
from netlayers import connect_pair


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def registered() -> Iterator[None]:
    register_passable(
        datetime.datetime, "datetime",
        encode=datetime.datetime.isoformat, decode=datetime.datetime.fromisoformat,
    )
    register_passable(Point, "point", encode=lambda p: [p.x, p.y], decode=lambda xy: Point(*xy))
    try:
        yield
    finally:
        unregister_passable(datetime.datetime)
        unregister_passable(Point)


WHEN = datetime.datetime(2026, 11, 29, 1, 2, 3)


@pytest.mark.parametrize("body_format", ["capdata", "smallcaps"])
def test_registered_types_round_trip_through_the_endo_marshal(
    registered: None, body_format: Any
) -> None:
    marshal = Marshal(body_format=body_format)
    value = {"when": WHEN, "where": [Point(1, 2)], "plain": Tagged("other", 1)}
    body, slots = marshal.encode(value)
    assert slots == []
    assert '"datetime"' in body and "2026-11-29T01:02:03" in body
    back = marshal.decode(body, slots)
    assert back == value
    assert type(back["when"]) is datetime.datetime and type(back["where"][0]) is Point


def test_a_peer_without_the_registration_sees_a_tagged_value(registered: None) -> None:
    body, slots = Marshal().encode(WHEN)
    unregister_passable(datetime.datetime)
    assert Marshal().decode(body, slots) == Tagged("datetime", "2026-11-29T01:02:03")


def test_a_payload_the_decoder_refuses_is_a_decode_error(registered: None) -> None:
    body, slots = Marshal().encode(Tagged("datetime", "not a date"))
    with pytest.raises(DecodeError, match=r"'datetime'.*refused") as info:
        Marshal().decode(body, slots)
    assert type(info.value.__cause__) is ValueError  # (in the compiled build too)


def test_registered_types_are_tagged_passables(registered: None) -> None:
    assert pass_style(WHEN) == "tagged"
    assert check_passable([WHEN, Point(1, 2)]) == "list"


def test_registration_conflicts_are_refused(registered: None) -> None:
    with pytest.raises(ValueError, match="already registered for"):
        register_passable(
            datetime.date, "datetime", encode=str, decode=datetime.date.fromisoformat
        )
    with pytest.raises(ValueError, match="already registered with tag"):
        register_passable(Point, "pt", encode=str, decode=lambda xy: Point(*xy))
    with pytest.raises(ValueError, match="already passable"):
        register_passable(int, "int", encode=str, decode=int)
    with pytest.raises(TypeError, match="non-empty str"):
        register_passable(decimal.Decimal, "", encode=str, decode=decimal.Decimal)


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        (WHEN, r"datetime\.datetime is not passable.*isoformat.*register_passable"),
        (Point(1, 2), r"Point is not passable.*dataclasses\.asdict.*@far.*register_passable"),
        ({1, 2}, r"set is not passable: send a list"),
        (object(), r"object is not passable.*@far.*plain data.*register_passable"),
    ],
)
def test_unpassable_values_say_what_to_do(value: Any, advice: str) -> None:
    with pytest.raises(PassStyleError, match=advice):
        pass_style(value)
    with pytest.raises(PassStyleError, match=advice):
        Marshal().encode([value])


@far
class Clock:
    def now(self) -> datetime.datetime:
        return WHEN

    def later(self, when: datetime.datetime) -> datetime.datetime:
        return when + datetime.timedelta(hours=1)


@pytest.mark.anyio
async def test_registered_types_round_trip_over_ocapn(registered: None) -> None:
    async with connect_pair(bootstrap_b=Clock()) as (a, _b):
        clock = a.bootstrap()
        assert await E(clock).now() == WHEN
        assert await E(clock).later(WHEN) == WHEN + datetime.timedelta(hours=1)


@pytest.mark.anyio
async def test_an_unpassable_answer_breaks_the_promise_with_advice() -> None:
    async with connect_pair(bootstrap_b=Clock()) as (a, _b):
        clock = a.bootstrap()
        with pytest.raises(Exception, match=r"datetime\.datetime is not passable.*isoformat"):
            await E(clock).now()
        with pytest.raises(PassStyleError, match=r"datetime\.datetime is not passable"):
            await E(clock).later(WHEN)
