"""Blocking use from a script or a notebook: no async code needed."""

from captp import far
from netlayers import tcp_testing_only
from ocapn.sync import SyncNode


@far
class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n


@far
class Factory:
    def make_counter(self, start: int) -> Counter:
        return Counter(start)


with SyncNode(tcp_testing_only()) as server, SyncNode(tcp_testing_only(), timeout=10) as client:
    uri = server.publish(Factory())  # in real life: another process, another machine
    factory = client.enliven(uri)
    counter = factory.make_counter(41)  # waits for the answer: a SyncRef
    print(counter.incr())
    print(counter.incr(timeout=2))  # a timeout for one call
