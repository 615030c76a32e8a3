"""``ocapn refs`` and ``ocapn revoke``: operate a state directory from a shell.

::

    ocapn refs --state DIR [--check]     # one line per stored sturdyref: URI, what it names
    ocapn revoke --state DIR URI ...     # end sturdyrefs for good

Neither takes the state directory's lock, so both work beside a running
node: ``refs`` reads, ``revoke`` commits its deletions (SQLite orders it
with the node's own writes) and the node refuses a revoked sturdyref from
its next ``fetch`` on.  Also here: :func:`publish_served`, what
``ocapn serve --state`` publishes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from ocapn.errors import LocatorError, UnknownSwissNum
from ocapn.locators import PeerLocation, Sturdyref
from ocapn.persist.errors import StateError
from ocapn.persist.persistent import Persistent
from ocapn.persist.state import LOCATION_KEY
from ocapn.persist.store import StateStore, StoredRef

if TYPE_CHECKING:
    from ocapn.node import Node

__all__ = ["add_commands", "publish_served", "run_command"]


def add_commands(commands: Any) -> None:
    """Add ``refs`` and ``revoke`` to the ``ocapn`` command's subparsers."""
    refs = commands.add_parser("refs", help="list the sturdyrefs a state directory keeps")
    refs.add_argument("--state", required=True, metavar="DIR", help="the state directory")
    refs.add_argument("--check", action="store_true", help="also run SQLite's integrity check")
    revoke = commands.add_parser("revoke", help="end sturdyrefs kept in a state directory")
    revoke.add_argument("--state", required=True, metavar="DIR", help="the state directory")
    revoke.add_argument("uris", nargs="+", metavar="URI", help="ocapn://... sturdyref URIs")


def run_command(args: argparse.Namespace) -> int:
    """Run ``refs`` or ``revoke``; the exit status.  Failures raise :class:`StateError`."""
    if args.command == "refs":
        return _refs(args.state, args.check)
    return _revoke(args.state, args.uris)


def _location(store: StateStore) -> PeerLocation:
    uri = store.get_meta(LOCATION_KEY)
    if uri is None:
        raise StateError(f"{store.directory} has no node location yet (no node ran on it)")
    return PeerLocation.from_uri(uri.decode("utf-8"))


def describe(row: StoredRef) -> str:
    """What a sturdyref row names, for people: ``restorer=counter name=main``."""
    parts = []
    if row.restorer is not None:
        parts.append(f"restorer={row.restorer}")
    if row.name is not None:
        parts.append(f"name={row.name}")
    parts.append(time.strftime("created=%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.created)))
    return " ".join(parts)


def _refs(directory: str, check: bool) -> int:
    with StateStore(directory, readonly=True) as store:
        if check:
            problems = store.check()
            for problem in problems:
                print(f"integrity: {problem}", file=sys.stderr)
            if problems:
                return 1
        location = _location(store)
        for row in store.refs():
            print(f"{Sturdyref(location, row.swiss)}\t{describe(row)}")
    return 0


def _revoke(directory: str, uris: list[str]) -> int:
    with StateStore(directory, exclusive=False) as store:
        location = _location(store)
        status = 0
        for uri in uris:
            sturdyref = Sturdyref.from_uri(uri)
            if sturdyref.peer != location:
                raise LocatorError(f"{uri} names another node than {location}")
            if store.remove_sturdyref(sturdyref.swiss_num) is not None:
                print(f"revoked {uri}")
            else:
                print(f"ocapn revoke: {UnknownSwissNum.__name__}: not kept here: {uri}",
                      file=sys.stderr)
                status = 1
    return status


def publish_served(
    node: Node, obj: Any, swiss_num: bytes | None, name: str | None
) -> Sturdyref:
    """What ``ocapn serve`` publishes; with a state directory, under ``name``.

    A persistent object already kept under ``name`` is not replaced: its
    stored state is what answers (restored on first use).
    """
    if node.state is None or name is None:
        return node.publish(obj, swiss_num)
    swiss = node.state.store.swiss_for_name(name)
    if swiss is not None and isinstance(obj, Persistent):
        row = node.state.store.find(swiss)
        if row is not None and row.object_id is not None:
            return Sturdyref(node.location, swiss)
    return node.publish(obj, swiss_num, name=name)
