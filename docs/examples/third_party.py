"""Passing a reference to a third machine: the receiver then talks to the exporter directly."""

import anyio

from captp import E, far
from netlayers.testing import open_network


@far
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@far
class Worker:
    async def bump_twice(self, counter: object) -> int:
        await E(counter).incr()
        result: int = await E(counter).incr()
        return result


async def main() -> None:
    async with open_network() as net:
        alice, bob, carol = await net.node("alice"), await net.node("bob"), await net.node("carol")
        counter = await alice.enliven(carol.publish(Counter()))  # carol's object
        worker = await alice.enliven(bob.publish(Worker()))  # bob's object
        # alice hands bob a reference to carol's counter (a third-party handoff)
        print("bob counted to", await E(worker).bump_twice(counter))
        peers = sorted(s.peer_location.designator for s in bob.sessions if s.peer_location)
        print("bob talks to carol directly:", peers)


anyio.run(main)
