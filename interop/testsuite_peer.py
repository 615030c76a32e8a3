"""A peer for the OCapN conformance suite (ocapn/ocapn-test-suite).

Run::

    python -m interop.testsuite_peer --host 127.0.0.1 --port 22045 --profile suite-main
    python -m interop.testsuite_peer --netlayer websocket --port 0 --key-file peer.key

It prints its locator URI as the first line on stdout, then serves until
killed.  The objects the suite fetches sit at the swiss numbers of
``spec/ocapn-test-suite.md`` section 2.2 (ASCII bytes), and behave as the
suite's tests require (the tests are authoritative where the suite's README
differs):

* car factory builder: ``()`` -> a car factory; the factory takes one list
  ``['color 'model]`` -> a car; the car, called with nothing, says
  ``"Vroom! I am a <color> <model> car!"``; any other factory argument breaks;
* echo gc: returns its arguments as one list and keeps nothing;
* greeter: sends ``"Hello"`` to the reference it is given (with an answer
  position and a resolver) and drops the promise;
* promise resolver: ``()`` -> ``[promise, resolver]``;
* sturdyref enlivener: enlivens the ``ocapn-sturdyref`` it is given and
  returns the live reference (a handoff when that lives on a third peer).

Profiles: ``suite-main`` for the suite's main branch (6c146dc), ``spec`` (the
default) for a suite with ``op:deliver-only`` removed and plural GC labels;
see ``spec-notes/0021-conformance-suite.md`` for the exact runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any, Final

import anyio

from captp import E, Symbol, far, make_promise
from netlayers.choose import NETLAYERS, make_netlayer
from ocapn.identity import NodeIdentity
from ocapn.locators import Sturdyref
from ocapn.node import Node
from ocapn.wire import PROFILES

__all__ = ["SWISS_NUMS", "main", "make_objects"]

SWISS_NUMS: Final = {
    "car-factory-builder": b"JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ",
    "echo-gc": b"IO58l1laTyhcrgDKbEzFOO32MDd6zE5w",
    "greeter": b"VMDDd1voKWarCe2GvgLbxbVFysNzRPzx",
    "promise-resolver": b"IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr",
    "sturdyref-enlivener": b"gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB",
}


def _make_car(spec: Any) -> Any:
    if type(spec) is not list or len(spec) != 2 or not all(type(s) is Symbol for s in spec):
        raise TypeError(f"a car is made from ['color 'model] (two symbols), not {spec!r}")
    color, model = spec[0].name, spec[1].name

    @far
    def car() -> str:
        return f"Vroom! I am a {color} {model} car!"

    return car


@far
def car_factory_builder() -> Any:
    """Makes car factories."""
    return far(_make_car)


@far
def echo_gc(*args: Any) -> list[Any]:
    """Returns its arguments; keeps nothing, so imported references can be collected."""
    return list(args)


@far
def greeter(target: Any) -> None:
    """Says "Hello" to ``target`` (a question: answer position and resolver) and forgets it."""
    E(target)("Hello")


@far
def promise_resolver() -> list[Any]:
    """A fresh promise and the resolver that settles it."""
    promise, resolver = make_promise()
    return [promise, resolver]


def make_objects(node: Node) -> dict[bytes, Any]:
    """The suite's objects, by swiss number, for ``node``."""

    @far
    async def sturdyref_enlivener(sturdyref: Any) -> Any:
        if type(sturdyref) is not Sturdyref:
            raise TypeError(f"expected an ocapn-sturdyref, got {type(sturdyref).__name__}")
        return await node.enliven(sturdyref)

    return {
        SWISS_NUMS["car-factory-builder"]: car_factory_builder,
        SWISS_NUMS["echo-gc"]: echo_gc,
        SWISS_NUMS["greeter"]: greeter,
        SWISS_NUMS["promise-resolver"]: promise_resolver,
        SWISS_NUMS["sturdyref-enlivener"]: sturdyref_enlivener,
    }


async def serve(
    host: str, port: int, profile: str, netlayer: str = "tcp-testing-only",
    identity: NodeIdentity | None = None,
) -> None:
    """Serve the suite's objects until cancelled; print our locator URI first."""
    layer = make_netlayer(netlayer, host, port, identity=identity)
    async with Node(layer, profile=PROFILES[profile]) as node:
        for swiss_num, obj in make_objects(node).items():
            node.publish(obj, swiss_num)
        print(node.location.to_uri(), flush=True)
        await anyio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--netlayer", default="tcp-testing-only", choices=NETLAYERS, help="transport to serve on"
    )
    parser.add_argument("--key-file", help="identity key file (websocket, np; made if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=22045, help="TCP port (0: any free port)")
    parser.add_argument(
        "--profile", default="spec", choices=sorted(PROFILES), help="wire profile to write"
    )
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log sessions to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        identity = NodeIdentity.load_or_create(args.key_file) if args.key_file else None
        anyio.run(
            serve, args.host, args.port, args.profile, args.netlayer, identity,
            backend=args.backend,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
