"""The zygote: a preloaded, single-threaded process that forks workers in a few milliseconds.

A cold worker spends ~100 ms importing its runtime.  The zygote imports it
once, then waits on a control socket; each request carries the policy (JSON)
and two file descriptors (the worker's end of the channel and the log file).
It keeps one forked child waiting (a spare) and hands it the request, so no
fork happens while a worker starts; the child confines itself and serves
(:func:`_worker.child_main`).  The zygote answers with the child's pid and a
pidfd, through which the host kills it (a pidfd cannot name a recycled pid),
then forks the next spare once no request has come for a moment.  The zygote never runs guest
code; it is not confined itself, but it holds nothing: an empty environment,
cwd ``/``, no file but its control socket, and it dies with the host
(``PR_SET_PDEATHSIG``) or when the control socket closes.

Host side: :func:`spawn` (one zygote per host process, started on first use).
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Final

__all__ = ["ZygoteError", "shutdown", "spawn"]

_MAX_REQUEST: Final = 1 << 20
_FDS_PER_REQUEST: Final = 2
_ZYGOTE_MAIN: Final = "from captp.confine._zygote import main; main()"


class ZygoteError(OSError):
    """The zygote could not be started or did not answer."""


def _send_fds(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _recv_fds(sock: socket.socket, size: int, maxfds: int) -> tuple[bytes, list[int]]:
    data, ancdata, _flags, _addr = sock.recvmsg(size, socket.CMSG_SPACE(maxfds * 4))
    fds = array.array("i")
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    return data, list(fds)


# -- the zygote process -----------------------------------------------------------


# After a request, the zygote waits this long for the next one before it forks
# the spare that will serve it: the fork then happens while nothing is
# starting, not in the middle of the worker just handed over.
_SPARE_DELAY_S: Final = 0.05


class _Spare:
    """A forked child waiting for its request: handing it over costs no fork."""

    def __init__(self, control: socket.socket, *, ahead: bool) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            control.close()
            ours.close()
            _become_worker(theirs, rehearse=ahead)  # never returns
        theirs.close()
        self.pid = pid
        self.socket = ours
        self.pidfd = os.pidfd_open(pid)

    def hand_over(self, payload: bytes, fds: list[int]) -> None:
        """Send the request to the spare (it now owns the descriptors)."""
        _send_fds(self.socket, payload, fds)

    def close(self) -> None:
        self.socket.close()  # an unused spare reads end of file and exits
        os.close(self.pidfd)


def _become_worker(requests: socket.socket, *, rehearse: bool) -> None:
    from captp.confine import _worker

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if rehearse:  # forked ahead of need: pay the start's copy-on-write faults now
        with contextlib.suppress(Exception):  # an optimisation only
            _worker.rehearse()
    try:
        data, fds = _recv_fds(requests, _MAX_REQUEST, _FDS_PER_REQUEST)
    except OSError:
        os._exit(0)
    requests.close()
    if not data or len(fds) != _FDS_PER_REQUEST:
        os._exit(0)
    channel_fd, log_fd = fds
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _worker.child_main(channel_fd, json.loads(data))  # never returns


def _serve(control: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    control.sendall(b"ready")
    spare: _Spare | None = _Spare(control, ahead=True)
    while True:
        if spare is None:
            ready, _, _ = select.select([control], [], [], _SPARE_DELAY_S)
            if not ready:
                spare = _Spare(control, ahead=True)
                continue
        try:
            data, fds = _recv_fds(control, _MAX_REQUEST, _FDS_PER_REQUEST)
        except OSError:
            return
        if not data:
            return  # the host closed the control socket
        if len(fds) != _FDS_PER_REQUEST:
            for fd in fds:
                os.close(fd)
            control.sendall(b"error: expected two file descriptors")
            continue
        if spare is None:
            spare = _Spare(control, ahead=False)
        try:
            spare.hand_over(data, fds)
            _send_fds(control, b"%d" % spare.pid, [spare.pidfd])
        except OSError as exc:
            control.sendall(f"error: {exc}".encode())
        finally:
            for fd in fds:
                os.close(fd)
            spare.close()
            spare = None


def main() -> None:
    """``python -I -c program(...) FD BUILD``: preload, then fork workers on request."""
    from captp.confine import _kernel, _worker

    _kernel.die_with_parent()
    _worker.preload_runtime()
    if _kernel.load_libseccomp() is not None:
        _kernel.precompile_seccomp()
    gc.collect()  # not the rehearsal's garbage: frozen, every worker would hold it
    gc.freeze()  # forked workers then share the preloaded objects without copying them
    control = socket.socket(fileno=int(sys.argv[1]))
    _serve(control)


# -- the host's side --------------------------------------------------------------

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def _start() -> tuple[subprocess.Popen[bytes], socket.socket]:
    from captp.confine._channel import host_build
    from captp.confine._worker import program

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", program(_ZYGOTE_MAIN), str(theirs.fileno()), host_build()],
            pass_fds=(theirs.fileno(),),
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None,
        )
    finally:
        theirs.close()
    ours.settimeout(60)
    try:
        ready = ours.recv(16)
    except OSError as exc:
        process.kill()
        raise ZygoteError(f"the zygote did not start: {exc}") from exc
    if ready != b"ready":
        process.kill()
        raise ZygoteError(f"the zygote did not start (exit status {process.wait()})")
    atexit.register(shutdown)
    return process, ours


def spawn(policy: dict[str, Any], channel_fd: int, log_fd: int) -> tuple[int, int]:
    """Fork a worker from the zygote; its pid and a pidfd for it (the caller closes both fds)."""
    global _zygote
    payload = json.dumps(policy).encode()
    with _lock:
        for attempt in range(2):
            if _zygote is None or _zygote[0].poll() is not None:
                _zygote = _start()
            control = _zygote[1]
            try:
                _send_fds(control, payload, [channel_fd, log_fd])
                data, fds = _recv_fds(control, 256, 1)
                if not data:
                    raise ZygoteError("the zygote ended")
            except OSError:
                _zygote = None  # it died (or its parent thread ended): start another
                if attempt:
                    raise
                continue
            if not data.isdigit() or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                raise ZygoteError(f"the zygote refused: {data.decode(errors='replace')}")
            return int(data), fds[0]
    raise ZygoteError("unreachable")


def shutdown() -> None:
    """Stop the zygote (it is started again on next use)."""
    global _zygote
    with _lock:
        if _zygote is not None:
            process, control = _zygote
            _zygote = None
            control.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
