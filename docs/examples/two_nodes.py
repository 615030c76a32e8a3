"""Two OCapN nodes over TCP: one publishes an object at a sturdyref URI, the other enlivens it."""

import anyio

from captp import E, far
from netlayers import tcp_testing_only
from ocapn import Node


@far
class KeyValue:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def put(self, key: str, value: str) -> None:
        self.data[key] = value

    def get(self, key: str) -> str:
        return self.data[key]


async def main() -> None:
    async with Node(tcp_testing_only()) as server, Node(tcp_testing_only()) as client:
        uri = str(server.publish(KeyValue()))  # ocapn://<designator>.tcp-testing-only/s/...
        print(uri.split("/")[2].split(".")[1], "URI published")
        store = await client.enliven(uri)  # dials the server, fetches the object
        await E(store).put("a", "1")
        print("a =", await E(store).get("a"))


anyio.run(main)
