"""A first service: far objects, remote calls and pipelining over an in-memory pair."""

import anyio

from captp import E, far
from netlayers import connect_pair


@far
class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n


@far
class Greeter:
    def make_counter(self, start: int) -> Counter:
        return Counter(start)

    async def greet(self, name: str) -> str:
        return f"hello, {name}"


async def main() -> None:
    async with connect_pair(bootstrap_b=Greeter()) as (alice, _bob):
        greeter = await alice.bootstrap()  # a reference to bob's Greeter
        print(await E(greeter).greet("alice"))  # a remote call: await the promise
        counter = E(greeter).make_counter(41)  # a promise, not awaited ...
        print(await E(counter).incr())  # ... and sent to at once: one round trip


anyio.run(main)
