"""The ocapn command: one-line user errors with a non-zero exit, --version, help on every
option, pipelined chains in `ocapn call`, words that start with `--`."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from procs import spawn

import ocapn
from ocapn.cli import build_parser
from ocapn.locators import PeerLocation, Sturdyref
from ocapn.notation import format_value


def ocapn_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocapn.cli", *args], capture_output=True, text=True,
        timeout=timeout,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert text in done.stderr, done.stderr


def test_version() -> None:
    done = ocapn_cmd("--version")
    assert (done.returncode, done.stdout) == (0, f"ocapn {ocapn.__version__}\n")


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("call",), 1, "ocapn call: a URI is needed"),
        (("serve", "--port", "99999", "ocapn.cli:DemoGreeter"), 2, "a port is 0 to 65535"),
        (("serve", "--port", "http", "ocapn.cli:DemoGreeter"), 2, "not a port number: 'http'"),
        (("serve", "--swiss", "!!!", "ocapn.cli:DemoGreeter"), 1, "--swiss takes base64url"),
        (("serve", "ocapn.cli:Nothing"), 1, "ocapn.cli has no 'Nothing'"),
        (("call", "ocapn://x.tcp-testing-only/s/AAAA", "--timeout", "-1"), 2, "more than 0"),
        (("call", "not a uri", "greet"), 1, "ocapn call: LocatorError"),
        (("frobnicate",), 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_user_errors_are_one_line(args: tuple[str, ...], code: int, text: str) -> None:
    one_line_error(ocapn_cmd(*args), code, text)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield taken.getsockname()[1]


def test_a_port_in_use_is_one_line(busy_port: int) -> None:
    done = ocapn_cmd("serve", "--port", str(busy_port), "ocapn.cli:DemoGreeter")
    one_line_error(done, 1, "ocapn serve: OSError: [Errno 98]")
    assert "address already in use" in done.stderr


def test_listening_everywhere_without_advertise_says_what_to_do(busy_port: int) -> None:
    done = ocapn_cmd(
        "serve", "--host", "0.0.0.0", "--port", str(busy_port), "ocapn.cli:DemoGreeter"
    )
    assert done.stderr.splitlines()[0] == (
        "ocapn serve: note: the URI names 0.0.0.0, which peers elsewhere cannot dial;"
        " --advertise HOST puts a reachable name in it"
    )


def test_redialing_a_dead_server_is_one_line() -> None:
    with spawn("-m", "ocapn.cli", "serve", "ocapn.cli:DemoGreeter") as uri:
        pass  # the server is gone now
    done = ocapn_cmd("call", uri, "greet", "x")
    one_line_error(done, 1, "ocapn call: PeerUnreachable: no session with")


@pytest.fixture(scope="module")
def greeter_uri() -> Iterator[str]:
    with spawn("-m", "ocapn.cli", "serve", "ocapn.cli:DemoGreeter") as uri:
        yield uri


def test_a_pipelined_chain(greeter_uri: str) -> None:
    done = ocapn_cmd("call", greeter_uri, "make_counter", "41", "--", "incr")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr


def test_words_that_start_with_dashes_are_arguments(greeter_uri: str) -> None:
    done = ocapn_cmd("call", greeter_uri, "greet", "--verbose", "--timeout", "20")
    assert (done.returncode, done.stdout) == (0, '"Hello, --verbose!"\n'), done.stderr
    done = ocapn_cmd("call", greeter_uri, "greet", '"--timeout"')
    assert (done.returncode, done.stdout) == (0, '"Hello, --timeout!"\n'), done.stderr


def test_call_without_a_method_calls_the_object(greeter_uri: str) -> None:
    done = ocapn_cmd("call", greeter_uri)
    one_line_error(done, 1, "ocapn call: RemoteError:")  # a DemoGreeter is not a function


def test_a_chain_with_an_empty_call_is_refused(greeter_uri: str) -> None:
    one_line_error(ocapn_cmd("call", greeter_uri, "make_counter", "--", "--", "incr"), 1,
                   "nothing between two '--'")


def test_sturdyrefs_and_locators_print_as_uris() -> None:
    uri = "ocapn://abc.tcp-testing-only/s/AAAA?host=127.0.0.1&port=9"
    sturdyref = Sturdyref.from_uri(uri)
    assert format_value([sturdyref]) == f"[{sturdyref}]"
    assert str(sturdyref).startswith("ocapn://abc.tcp-testing-only/s/")
    assert format_value(PeerLocation("tcp-testing-only", "abc")) == (
        "ocapn://abc.tcp-testing-only"
    )


def test_a_chain_that_fails_early_says_so_once(greeter_uri: str) -> None:
    done = ocapn_cmd("call", greeter_uri, "greet", "--", "greet", "x")  # greet() lacks a name
    one_line_error(done, 1, "ocapn call: RemoteError: TypeError:")
