"""What failures look like: a remote exception, a timeout, a lost connection."""

import anyio

from captp import ConnectionLost, E, RemoteError, far
from netlayers.testing import open_network


@far
class Flaky:
    def fail(self, key: str) -> str:
        raise KeyError(key)

    async def slow(self) -> str:
        await anyio.sleep(10)
        return "late"


async def main() -> None:
    async with open_network() as net:
        client, server = await net.node(), await net.node()
        flaky = await client.enliven(server.publish(Flaky()))
        try:
            await E(flaky).fail("a")
        except RemoteError as exc:  # the peer's error type and message, never its traceback
            print("remote error:", exc)
        with anyio.move_on_after(0.1) as scope:  # a timeout is a cancel scope around the await
            await E(flaky).slow()
        print("timed out:", scope.cancelled_caught)
        net.network.break_links()  # the network fails
        try:
            await E(flaky).fail("b")
        except ConnectionLost as exc:
            print("lost:", type(exc).__name__)


anyio.run(main)
