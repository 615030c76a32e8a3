"""The ``ocapn`` command line.

::

    ocapn demo                               # two nodes in one process, a few calls
    ocapn serve MODULE:OBJECT [--port 0]     # publish an object, print its sturdyref URI
    ocapn call URI [METHOD] [ARG ...]        # enliven a sturdyref, call it, print the result
    ocapn call URI make_counter 41 -- incr   # a pipelined chain: incr() on the answer
    ocapn serve --state DIR MODULE:OBJECT    # the same URI after every restart
    ocapn refs --state DIR                   # what a state directory keeps
    ocapn revoke --state DIR URI             # end a kept sturdyref for good

    ocapn serve --netlayer websocket --key-file node.key app:Greeter
    ocapn serve --netlayer np --netlayer websocket --advertise example.org app:Greeter

``call`` sends ``METHOD(ARG, ...)``; without a method, or with ``-`` as the
method, it calls the object itself (a far function).  ``--`` starts another
call, sent to the answer of the one before it without waiting for it
(pipelined).  Every word after the URI is a method name or an argument,
whatever it starts with (``--verbose`` is a string); only ``call``'s own
options are read as options, anywhere (quote one, ``'"--timeout"'``, to pass
it as a string).  Arguments use the
notation of :mod:`ocapn.notation`: ``42``, ``2.5``, ``"text"`` or a bare
word, ``'symbol``, ``b"bytes"``, ``[lists]``, ``{"structs": 1}``, ``true``,
``false``, ``null``, ``undefined``.  The result is printed in the same notation.

``serve`` listens on ``--netlayer`` (``websocket``, ``np`` or
``tcp-testing-only``, the default; repeat it to serve on several) and prints
one URI per netlayer, the first netlayer's first.  ``--key-file`` keeps the
node's identity (its websocket and np designators) in a file, made if
missing.  ``call`` dials whatever transport its URI names.  Every command
takes ``--profile`` (``spec``, ``suite-main``, ``endo``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import ssl
import sys
from typing import Any, Final

import anyio

from captp import E, far, is_remotable
from captp.errors import CapTPError
from captp.limits import DEFAULT_LIMITS, Limits
from netlayers.choose import NETLAYERS, make_netlayer
from netlayers.tcp_testing import tcp_testing_only
from netlayers.websocket import self_signed_client_context
from ocapn._version import __version__
from ocapn.identity import NodeIdentity
from ocapn.limit_flags import add_limit_flags, limits_from_args
from ocapn.locators import Sturdyref, parse_uri
from ocapn.netlayer import Netlayer
from ocapn.node import Node
from ocapn.notation import NotationError, format_value, parse_value
from ocapn.persist import Persistent
from ocapn.persist import commands as persist_commands
from ocapn.wire import PROFILES

__all__ = ["DemoCounter", "DemoGreeter", "build_parser", "main"]


# == demo =================================================================================


@far
class DemoCounter:
    """A counter the demo makes remotely."""

    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        """Add one; the new value."""
        self.n += 1
        return self.n


@far
class DemoGreeter:
    """The object ``ocapn demo`` serves."""

    def greet(self, name: str) -> str:
        """A greeting for ``name``."""
        return f"Hello, {name}!"

    def make_counter(self, start: int = 0) -> DemoCounter:
        """A new counter starting at ``start``."""
        return DemoCounter(start)


async def _demo(profile: str) -> None:
    wire_profile = PROFILES[profile]
    async with (
        Node(tcp_testing_only(), profile=wire_profile) as server,
        Node(tcp_testing_only(), profile=wire_profile) as client,
    ):
        sturdyref = server.publish(DemoGreeter())
        print(f"server node serves a DemoGreeter at\n  {sturdyref}")
        greeter = await client.enliven(str(sturdyref))
        print(f"client node enlivened it: {format_value(greeter)}")
        greeting = await E(greeter).greet("world")
        print(f'E(greeter).greet("world")                  -> {format_value(greeting)}')
        counter = E(greeter).make_counter(41)  # a promise: not awaited
        first = await E(counter).incr()  # sent to the promise: pipelined
        print(f"E(E(greeter).make_counter(41)).incr()      -> {first}  (pipelined, one trip)")
        print(f"E(counter).incr()                          -> {await E(counter).incr()}")
        wrong = E(greeter).no_such_method()
        try:
            await wrong
        except CapTPError as exc:
            print(f"E(greeter).no_such_method()                -> broken: {exc}")
        print("done")


# == arguments =============================================================================


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"a timeout is more than 0 seconds, not {text}")
    return seconds


def _swiss(text: str) -> bytes:
    """A swiss number given in base64url (padding optional)."""
    try:
        swiss = base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_", validate=True
        )
    except (binascii.Error, ValueError):
        raise SystemExit(
            f"ocapn serve: --swiss takes base64url (A-Z a-z 0-9 - _), not {text!r}"
        ) from None
    if not swiss:
        raise SystemExit("ocapn serve: --swiss is empty")
    return swiss


# Options of `ocapn call`; every other word after `call` is the URI, a method or an argument.
_CALL_VALUE_OPTIONS: Final = ("--timeout", "--cafile", "--key-file", "--profile", "--backend")
_CALL_FLAGS: Final = ("--insecure-tls", "-h", "--help")


def _split_call(argv: list[str]) -> tuple[list[str], list[str]]:
    """``call``'s options, and its other words (URI, methods, arguments) as given."""
    options: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _CALL_VALUE_OPTIONS:
            options += argv[i : i + 2]
            i += 2
            continue
        if token in _CALL_FLAGS or token.split("=", 1)[0] in _CALL_VALUE_OPTIONS:
            options.append(token)
        else:
            words.append(token)
        i += 1
    return options, words


def _call_chain(words: list[str]) -> list[tuple[str | None, list[Any]]]:
    """``METHOD ARG ... -- METHOD ARG ...`` as (method or None, arguments) pairs."""
    chain: list[tuple[str | None, list[Any]]] = []
    segment: list[str] = []
    for word in [*words, "--"]:
        if word != "--":
            segment.append(word)
            continue
        if not segment and chain:
            raise SystemExit("ocapn call: nothing between two '--' (a call needs a method or -)")
        method = segment[0] if segment else None
        chain.append((None if method == "-" else method, [parse_value(a) for a in segment[1:]]))
        segment = []
    return chain


def _user_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside ``exc`` (an exception group is opened, recursively)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _user_errors(sub)]
    return [exc]


# == serve =================================================================================


def _load(spec: str) -> Any:
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise SystemExit(f"ocapn serve: expected MODULE:OBJECT, got {spec!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"ocapn serve: cannot import {module_name}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"ocapn serve: {module_name} has no {attr!r}") from None
    if isinstance(obj, type):
        obj = obj()
    if not is_remotable(obj):
        raise SystemExit(
            f"ocapn serve: {spec} is not a far object (mark its class with @captp.far)"
        )
    return obj


def _serve_netlayers(args: argparse.Namespace) -> list[Netlayer]:
    """The netlayers ``serve`` (or a test peer) asks for on its command line."""
    kinds = args.netlayer or ["tcp-testing-only"]
    if len(kinds) > 1 and args.port:
        raise SystemExit("--port takes one --netlayer (with several, each picks a free port)")
    server_context = None
    if args.tls_cert:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(args.tls_cert, args.tls_key)
    return [
        make_netlayer(
            kind, args.host, args.port, advertise=args.advertise,
            ssl_context=server_context if kind == "websocket" else None,
        )
        for kind in kinds
    ]


def _identity(key_file: str | None) -> NodeIdentity | None:
    return NodeIdentity.load_or_create(key_file) if key_file else None


async def _serve(
    obj: Any, netlayers: list[Netlayer], profile: str, swiss_num: bytes | None,
    identity: NodeIdentity | None, state: str | None = None, name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    restorers = [type(obj)] if state is not None and isinstance(obj, Persistent) else None
    async with Node(
        *netlayers, profile=PROFILES[profile], identity=identity, state=state,
        restorers=restorers, limits=limits,
    ) as node:
        first = persist_commands.publish_served(node, obj, swiss_num, name)
        print(first, flush=True)
        for netlayer in netlayers[1:]:
            print(node.sturdyref(first.swiss_num, transport=netlayer.transport), flush=True)
        await anyio.sleep_forever()


# == call ==================================================================================


async def _call(
    uri: str, chain: list[tuple[str | None, list[Any]]], profile: str, timeout: float,
    client_context: ssl.SSLContext | None = None, identity: NodeIdentity | None = None,
) -> Any:
    transport = ""
    parsed: Any = None
    if uri.startswith("ocapn://"):
        parsed = parse_uri(uri)
        transport = (parsed.peer if isinstance(parsed, Sturdyref) else parsed).transport
    if transport not in NETLAYERS:
        transport = "tcp-testing-only"  # the node says what it cannot dial
    netlayer = make_netlayer(transport, client_ssl_context=client_context)
    connected = False
    try:
        # The deadline covers closing the node too: --timeout 2 returns in 2 s.
        with anyio.fail_after(timeout):
            async with Node(netlayer, profile=PROFILES[profile], identity=identity) as node:
                if isinstance(parsed, Sturdyref):
                    await node.connect(parsed.peer)
                connected = True
                answer = await node.enliven(uri)
                for method, args in chain:  # each sent to the answer before: pipelined
                    answer = E(answer)(*args) if method is None else E(answer)[method](*args)
                return await answer
    except TimeoutError:
        if connected:
            raise TimeoutError(
                f"no answer within {timeout:g} s (the session is up: the peer is slow, "
                "or the call waits for something that does not come)"
            ) from None
        hint = " (a peer that frames with len:, such as Endo, needs --profile endo)"
        raise TimeoutError(
            f"no session within {timeout:g} s: the peer did not finish the handshake"
            + (hint if profile != "endo" else "")
        ) from None


# == main ==================================================================================


def build_parser() -> argparse.ArgumentParser:
    """The ``ocapn`` command's argument parser."""
    parser = _Parser(
        prog="ocapn", description="OCapN for Python: serve objects, call them, try a demo."
    )
    parser.add_argument("--version", action="version", version=f"ocapn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="two nodes in one process make a few calls")
    call = commands.add_parser(
        "call", help="enliven a sturdyref URI and call it",
        usage="ocapn call [options] URI [METHOD [ARG ...]] [-- METHOD [ARG ...]] ...",
        description="Enliven URI, send METHOD(ARG, ...) to it and print the answer. "
        "'--' starts another call, sent to the answer of the one before (pipelined): "
        "ocapn call URI make_counter 41 -- incr.  METHOD '-' (or none) calls the object "
        "itself.  Every word after the URI is a method or an argument, whatever it starts "
        "with; the options below are read anywhere.",
        epilog="Arguments: 42, 2.5, \"text\" or a bare word, 'symbol, b\"bytes\", [lists], "
        "{\"structs\": 1}, true, false, null, undefined.",
    )
    call.add_argument(
        "--timeout", type=_timeout, default=30.0, help="seconds for the whole call (default 30)"
    )
    call.add_argument("--cafile", help="wss://: trust this (self-signed) server certificate")
    call.add_argument(
        "--insecure-tls", action="store_true",
        help="wss://: check no certificate (the designator is still checked)",
    )
    serve = commands.add_parser("serve", help="publish MODULE:OBJECT and print its URI")
    serve.add_argument("object", metavar="MODULE:OBJECT", help="a far object (or far class)")
    serve.add_argument(
        "--netlayer", action="append", choices=NETLAYERS,
        help="transport to serve on (default tcp-testing-only; repeat for several)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=0, help="TCP port (default: any free)")
    serve.add_argument(
        "--advertise", help="host (or, for websocket, URL) to put in the URI instead of --host"
    )
    serve.add_argument("--tls-cert", help="websocket: serve wss:// with this certificate (PEM)")
    serve.add_argument("--tls-key", help="websocket: the certificate's private key (PEM)")
    serve.add_argument("--swiss", help="swiss number, base64url (default: random)")
    serve.add_argument("--state", metavar="DIR", help="keep identity and sturdyrefs in DIR")
    serve.add_argument("--name", help="with --state: the name its sturdyref is kept under "
                       "(default: MODULE:OBJECT)")
    add_limit_flags(serve)
    persist_commands.add_commands(commands)
    for command in (call, serve):
        command.add_argument(
            "--key-file", help="the node's identity key (made, mode 0600, if missing)"
        )
    for command in (demo, call, serve):
        command.add_argument(
            "--profile", default="spec", choices=sorted(PROFILES),
            help="the OCapN wire variant to write (default spec: the current draft, as "
            "Goblins speaks it; endo: @endo/ocapn; suite-main: the conformance suite; "
            "cbor, endo-cbor: the same in CBOR)",
        )
        command.add_argument(
            "--backend", default="asyncio", choices=["asyncio", "trio"], help=argparse.SUPPRESS
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ocapn`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    words: list[str] = []
    if argv[:1] == ["call"]:
        options, words = _split_call(argv[1:])
        args = parser.parse_args(["call", *options])
    else:
        args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            anyio.run(_demo, args.profile, backend=args.backend)
            return 0
        if args.command == "serve":
            obj = _load(args.object)
            swiss = _swiss(args.swiss) if args.swiss is not None else None
            if args.tls_key and not args.tls_cert:
                raise SystemExit("ocapn serve: --tls-key goes with --tls-cert")
            if args.host in ("0.0.0.0", "::") and not args.advertise:
                print(
                    f"ocapn serve: note: the URI names {args.host}, which peers elsewhere "
                    "cannot dial; --advertise HOST puts a reachable name in it",
                    file=sys.stderr,
                )
            name = (args.name or args.object) if args.state else None
            identity = _identity(args.key_file)
            anyio.run(
                _serve, obj, _serve_netlayers(args), args.profile, swiss, identity, args.state,
                name, limits_from_args(args),
                backend=args.backend,
            )
            return 0
        if args.command in ("refs", "revoke"):
            return persist_commands.run_command(args)
        if not words or words[0] == "--":
            raise SystemExit("ocapn call: a URI is needed: ocapn call URI [METHOD [ARG ...]]")
        try:
            chain = _call_chain(words[1:])
        except NotationError as exc:
            print(f"ocapn call: {exc}", file=sys.stderr)
            return 2
        context = None
        if args.cafile or args.insecure_tls:
            context = self_signed_client_context(args.cafile)
        result = anyio.run(
            _call, words[0], chain, args.profile, args.timeout, context,
            _identity(args.key_file), backend=args.backend,
        )
        print(format_value(result))
        return 0
    except KeyboardInterrupt:
        return 130
    except (CapTPError, ValueError, OSError, TimeoutError, BaseExceptionGroup) as exc:
        errors = _user_errors(exc)
        if any(not isinstance(e, (CapTPError, ValueError, OSError, TimeoutError)) for e in errors):
            raise  # not a user error: a bug, with its traceback
        first = errors[0]
        message = str(first) or repr(first)
        print(f"ocapn {args.command}: {type(first).__name__}: {message}", file=sys.stderr)
        if "CERTIFICATE_VERIFY_FAILED" in message:
            print("(a self-signed wss:// server: ocapn call --cafile CERT, or --insecure-tls)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
