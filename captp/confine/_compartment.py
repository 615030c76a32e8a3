"""The host's side of a compartment: start a confined worker, evaluate guest code in it, end it."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

import anyio

from captp._eventual import E
from captp._vat import open_vat
from captp.confine import _channel, _kernel, _zygote
from captp.confine._errors import (
    CompartmentClosed,
    ConfinementError,
    GuestError,
    LayerUnavailable,
    LimitExceeded,
    WorkerDied,
)
from captp.confine._kernel import Layer
from captp.confine._policy import Policy
from captp.confine._worker import STRICT_FAILED, program
from captp.errors import ConnectionLost, RemoteError

__all__ = ["Compartment", "Report"]

log = logging.getLogger("captp.confine")

# How long a worker may take to start and answer its first call.  A cold start
# takes ~0.1 s and a fork a few ms; the margin is for loaded CI machines.
START_TIMEOUT_S: Final = 60.0

# How much of the worker's log an error message quotes.
LOG_TAIL: Final = 2000

_WORKER_MAIN: Final = "from captp.confine._worker import main; main()"


@dataclass(frozen=True, slots=True)
class Report:
    """Which kernel layers a worker applied.  ``confined``: all of them did.

    ``loop``: the worker's event loop (``"uvloop"`` or ``"asyncio"``).
    """

    mode: str
    pid: int
    layers: Mapping[str, Layer]
    loop: str = "asyncio"

    @property
    def applied(self) -> list[str]:
        """Names of the layers that applied."""
        return [n for n, layer in self.layers.items() if layer.ok]

    @property
    def missing(self) -> list[str]:
        """Names of the layers that did not apply (all of them when unconfined)."""
        return [n for n in _kernel.LAYERS if not (n in self.layers and self.layers[n].ok)]

    @property
    def confined(self) -> bool:
        """True when every layer applied."""
        return not self.missing

    def __str__(self) -> str:
        lines = [f"mode {self.mode}, worker pid {self.pid}, loop {self.loop}"]
        for name in _kernel.LAYERS:
            layer = self.layers.get(name)
            if layer is None:
                lines.append(f"  {name}: not applied")
            else:
                lines.append(f"  {name}: {'applied' if layer.ok else 'MISSING'} ({layer.detail})")
        return "\n".join(lines)


def _guest_error(exc: RemoteError) -> GuestError:
    # OCapN errors carry a message only; the worker writes it as "Name: message".
    name, message = exc.remote_name, exc.remote_message
    if name is None:
        head, sep, rest = message.partition(": ")
        if sep and head.isidentifier():
            name, message = head, rest
    return GuestError(message, name)


def _check_strict() -> None:
    for name, layer in _kernel.probe().items():
        if not layer.ok:
            raise LayerUnavailable(name, layer.detail)


class Compartment:
    """One confined worker process, reached only through CapTP.  Use ``async with``.

    ``endowments``: the capabilities guest code gets as globals (any
    passables: far objects, wrappers, references from other sessions or
    machines); ``policy``: limits, preloaded modules, mode (default
    :class:`Policy()`: strict).  When the policy names endowments, the guest
    gets exactly those, picked from ``endowments`` by their pet names.
    Leaving the block kills the worker, which ends every capability it held.
    """

    def __init__(
        self, endowments: Mapping[str, Any] | None = None, policy: Policy | None = None
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self.endowments = self.policy.select(endowments or {})
        self._stack: AsyncExitStack | None = None
        self._connection: Any = None
        self._admin: Any = None
        self._report: Report | None = None
        self._log: Any = None
        self._pidfd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._lost: ConnectionLost | None = None
        self._killed_for: LimitExceeded | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid {self._pid}"
        return f"<Compartment {self.policy.name} {state}>"

    @property
    def pid(self) -> int:
        """The worker's process id (0 before it starts)."""
        return self._pid

    # == starting ====================================================================

    async def __aenter__(self) -> Compartment:
        policy = self.policy
        if not sys.platform.startswith("linux"):
            raise ConfinementError(
                "compartments need Linux (pidfds, namespaces, Landlock, seccomp)"
            )
        if policy.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ConfinementError(
                f"compartment {policy.name!r}: its policy asks for uvloop, which is not installed"
            )
        if policy.mode == "strict":
            _check_strict()
        elif policy.mode == "unconfined":
            message = (
                f"compartment {policy.name!r} is UNCONFINED: guest code has every power of "
                "a process of this user (tests only)"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            log.warning(message)
        self._stack = stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException:
            await self.aclose()
            raise
        return self

    def _spawn(self, worker_sock: socket.socket) -> None:
        config = self.policy.for_worker()
        if self.policy.start == "zygote":
            self._pid, self._pidfd = _zygote.spawn(config, worker_sock.fileno(), self._log.fileno())
            return
        import json

        fd = worker_sock.fileno()
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", program(_WORKER_MAIN), str(fd), json.dumps(config),
             _channel.host_build()],
            pass_fds=(fd,),
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        self._pid = self._process.pid
        self._pidfd = os.pidfd_open(self._pid)

    async def _start(self, stack: AsyncExitStack) -> None:
        self._log = stack.enter_context(tempfile.TemporaryFile(prefix="captp-confine-log-"))  # noqa: SIM115
        host_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._spawn(worker_sock)
        except BaseException:
            host_sock.close()
            raise
        finally:
            worker_sock.close()
        vat = await stack.enter_async_context(open_vat())
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        channel = await _channel.open_channel(host_sock, tg)
        self._connection = connection = _channel.session_over(
            channel, vat, bootstrap=None, max_message=self.policy.limits.max_message,
            name=f"compartment {self.policy.name}", on_lost=self._on_lost,
        )
        tg.start_soon(connection.run)
        stack.push_async_callback(connection.aclose, "compartment closed")
        self._admin = connection.bootstrap()
        try:
            with anyio.fail_after(START_TIMEOUT_S):
                raw = await E(self._admin).report()
        except TimeoutError:
            raise WorkerDied(
                f"the worker did not answer within {START_TIMEOUT_S} s{self._log_tail()}"
            ) from None
        except ConnectionLost as exc:
            self._raise_start_failure(exc)
        self._report = Report(
            raw["mode"], raw["pid"],
            {n: Layer(n, bool(v["ok"]), str(v["detail"])) for n, v in raw["layers"].items()},
            str(raw["loop"]),
        )
        if self.policy.mode == "best_effort" and not self._report.confined:
            log.warning("compartment %r runs without %s", self.policy.name, self._report.missing)

    def _raise_start_failure(self, exc: ConnectionLost) -> None:
        # The worker wrote its reason before it exited, and its exit closed the channel.
        text = self.log().decode(errors="replace")
        for line in text.splitlines():
            if line.startswith(STRICT_FAILED):
                layer, _, reason = line[len(STRICT_FAILED):].strip().partition(" ")
                raise LayerUnavailable(layer, reason) from None
        raise WorkerDied(f"the worker ended while starting: {exc.reason}{self._log_tail()}")

    def _on_lost(self, error: ConnectionLost) -> None:
        self._lost = error
        self.kill()  # a session that ended (abort, bad message) ends its worker

    # == using =======================================================================

    def report(self) -> Report:
        """Which kernel layers the worker applied (see :class:`Report`)."""
        if self._report is None:
            raise CompartmentClosed("the compartment has not started")
        return self._report

    def log(self) -> bytes:
        """What the worker wrote to stdout and stderr (capped at ``limits.log_bytes``)."""
        if self._log is None or self._log.closed:
            return b""
        self._log.seek(0)
        data: bytes = self._log.read(self.policy.limits.log_bytes + 1)
        return data

    def _log_tail(self) -> str:
        text = self.log().decode(errors="replace").strip()
        return f"; its log ends: {text[-LOG_TAIL:]}" if text else ""

    async def evaluate(self, source: str, **more_endowments: Any) -> Any:
        """Run guest ``source`` in the worker; the value it binds to ``result``.

        Its globals are ``E`` and the endowments (plus ``more_endowments``);
        top-level ``await`` is allowed.  Raises :class:`GuestError` when the
        guest raises, :class:`LimitExceeded` when it runs past ``wall_s``
        (the worker is then killed), :class:`WorkerDied` when the worker ends.
        """
        if self._closed or self._admin is None:
            raise CompartmentClosed(f"compartment {self.policy.name!r} is closed")
        self._raise_if_dead()
        endowments = {**self.endowments, **more_endowments}
        wall = self.policy.limits.wall_s
        with anyio.move_on_after(wall):
            try:
                return await E(self._admin).evaluate(source, endowments)
            except RemoteError as exc:
                raise _guest_error(exc) from None
            except ConnectionLost:
                self._raise_if_dead()
                raise
        self._killed_for = LimitExceeded(
            "wall_s", f"evaluate ran longer than {wall:g} s; the worker was killed"
        )
        self.kill()
        raise self._killed_for

    def _raise_if_dead(self) -> None:
        if self._killed_for is not None:
            raise self._killed_for
        if self._lost is not None:
            raise WorkerDied(
                f"compartment {self.policy.name!r}: session ended: {self._lost.reason}"
                f"{self._log_tail()}"
            )

    # == ending ======================================================================

    def kill(self) -> None:
        """Kill the worker now (SIGKILL); its session ends and its capabilities with it."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def aclose(self) -> None:
        """Kill the worker and end its session."""
        if self._closed:
            return
        self._closed = True
        self.kill()
        try:
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            if self._process is not None:
                with anyio.CancelScope(shield=True):
                    for _ in range(500):
                        if self._process.poll() is not None:
                            break
                        await anyio.sleep(0.01)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
