"""A custom type that travels by copy: register it on both sides."""

import datetime

import anyio

from captp import E, far, register_passable
from netlayers import connect_pair

register_passable(
    datetime.date, "date", encode=datetime.date.isoformat, decode=datetime.date.fromisoformat
)


@far
class Calendar:
    def next_day(self, day: datetime.date) -> datetime.date:
        return day + datetime.timedelta(days=1)

    def pair(self) -> tuple[int, int]:
        return (1, 2)


async def main() -> None:
    async with connect_pair(bootstrap_b=Calendar()) as (a, _b):
        calendar = a.bootstrap()
        print(repr(await E(calendar).next_day(datetime.date(2026, 2, 28))))
        print(await E(calendar).pair())  # tuples travel as lists


anyio.run(main)
