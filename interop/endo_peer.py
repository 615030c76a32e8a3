"""A Python Endo CapTP peer that any Node program can drive.

    python -m interop.endo_peer --host 127.0.0.1 --port PORT

Serves, in the Endo dialect over netstring TCP, a bootstrap object with
``ping()``, ``echo(...args)`` (its arguments as an array), ``makeCounter(start)``
(a far ``Counter`` with ``incr()``), ``callMe(fn, ...args)`` (calls the far
function it is handed), ``fail(message)`` (throws a ``TypeError``) and a few
more (see :class:`PeerBootstrap`).  Prints ``listening PORT`` on its first
line (``--port 0`` picks a free port) and runs until killed.

Numbers a JS peer sees are JS numbers: this peer counts in ``float``
(a Python ``int`` would travel as a bigint).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from typing import Any

import anyio

from captp import E, Promise, far, make_promise
from captp.endo import DEFAULT_QUESTION_TIMEOUT
from netlayers.endo_tcp import serve_tcp

__all__ = ["Counter", "PeerBootstrap", "main"]


@far
class Counter:
    """A far counter: ``incr()`` adds one and returns the new count."""

    def __init__(self, start: float = 0.0) -> None:
        self.n = float(start)

    def incr(self) -> float:
        """Add one; the new count."""
        self.n += 1
        return self.n

    def get(self) -> float:
        """The current count."""
        return self.n


@far
class Resolver:
    """Settles the promise :meth:`PeerBootstrap.makeDeferred` handed out."""

    def __init__(self) -> None:
        self.promise, self._resolver = make_promise()

    def resolve(self, value: Any) -> bool:
        """Fulfil the promise with ``value``."""
        self._resolver.resolve(value)
        return True

    def reject(self, message: str) -> bool:
        """Break the promise with an ``Error(message)``."""
        self._resolver.break_(Exception(message))
        return True


@far(name="Bootstrap")
class PeerBootstrap:
    """The bootstrap object of this peer (method names as a JS peer calls them)."""

    def __init__(self) -> None:
        self._never: list[Promise] = []

    def ping(self) -> str:
        """``"pong"``."""
        return "pong"

    def echo(self, *args: Any) -> list[Any]:
        """The arguments, as an array."""
        return list(args)

    def add(self, a: Any, b: Any) -> Any:
        """``a + b``."""
        return a + b

    def makeCounter(self, start: float = 0.0) -> Counter:
        """A new far counter starting at ``start``."""
        return Counter(start)

    def makeAdder(self) -> Any:
        """A far function adding its two arguments."""
        return far(lambda a, b: a + b, name="adder")

    def getRecord(self) -> dict[str, Any]:
        """A small record, for property gets."""
        return {"foo": "bar", "n": 42.0}

    def callMe(self, fn: Any, *args: Any) -> Any:
        """Call the far function ``fn`` with ``args``; its result."""
        return E(fn)(*args)

    def callMethod(self, obj: Any, method: str, *args: Any) -> Any:
        """Call ``obj[method](...args)`` on a far object; its result."""
        return E(obj)[method](*args)

    def sameAs(self, a: Any, b: Any) -> bool:
        """Whether ``a`` and ``b`` are the same reference."""
        return a is b

    async def awaitArg(self, promise: Any) -> list[Any]:
        """``["got", value]`` once ``promise`` fulfils (its rejection otherwise)."""
        return ["got", await E.when(promise)]

    def makeDeferred(self) -> dict[str, Any]:
        """``{promise, resolver}``: a promise the caller settles later through ``resolver``."""
        resolver = Resolver()
        return {"promise": resolver.promise, "resolver": resolver}

    def fail(self, message: str) -> None:
        """Throw ``TypeError(message)``."""
        raise TypeError(message)

    def never(self) -> Promise:
        """A promise that never settles (until the connection ends)."""
        promise, _ = make_promise()
        self._never.append(promise)
        return promise


async def serve(host: str, port: int, question_timeout: float | None) -> None:
    """Serve :class:`PeerBootstrap` until cancelled; print ``listening PORT`` first."""
    async with serve_tcp(
        lambda conn: PeerBootstrap(), host, port, name="py-peer",
        question_timeout=question_timeout,
    ) as server:
        print(f"listening {server.port}", flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:  # Ctrl-C arrives as KeyboardInterrupt instead
                return


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m interop.endo_peer", description="A Python Endo CapTP peer."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--question-timeout", type=float, default=DEFAULT_QUESTION_TIMEOUT,
        help="seconds to wait for an answer from the peer (0: forever)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, args.host, args.port, args.question_timeout or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
