"""The worker: one confined process per compartment, serving guest code over CapTP.

It starts either cold (``python -I -m captp.confine._worker FD POLICY``) or
forked from the zygote (:mod:`captp.confine._zygote`); both then run
:func:`child_main`:

1. move the channel to fd 3 and close every other file but 0-2 (stdin is
   ``/dev/null``, stdout and stderr the host's size-capped log file);
2. import what guest code may use (the runtime is imported already; the
   policy names the rest), since no file can be opened afterwards;
3. still single-threaded, apply the kernel layers (:func:`_kernel.confine`);
4. serve a :class:`WorkerAdmin` as the bootstrap of a CapTP session on the
   channel, under asyncio, until the host closes it.  The loop is uvloop
   when it is installed (unless the policy says ``loop = "asyncio"``): each
   call from the guest then costs the worker less CPU (``bench.confine``).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Final

import anyio

# Preloaded for the session, guest code and its errors: none of these can be
# imported once Landlock denies every file.
import anyio._backends._asyncio
import anyio.abc
import anyio.streams.memory

import captp.confine._channel as channel_module
from captp import E, far
from captp._passable import check_passable
from captp._vat import open_vat
from captp.confine import _kernel
from captp.confine._errors import LayerUnavailable

__all__ = ["WorkerAdmin", "child_main", "preload_runtime", "program"]

CHANNEL_FD: Final = 3

# The exit status of a worker whose strict confinement failed; its log's last
# line then reads ``STRICT_FAILED <layer> <reason>``.
EXIT_STRICT: Final = 78
STRICT_FAILED: Final = "captp.confine: strict confinement failed:"


# The switch the build chooser reads (captp/_native.py).  A worker's
# environment is empty: :func:`program` sets it from the host's argument before
# the first import, and :func:`preload_runtime` removes it once the choice is made.
_PURE_SWITCH: Final = "OCAPN_PURE"


def program(main: str) -> str:
    """The ``-c`` program of a worker or zygote started afresh: ``main``, in the host's build.

    Its command line ends with ``"pure"`` or ``"compiled"``
    (:func:`captp.confine._channel.host_build`); that argument is taken off
    ``sys.argv`` before ``main`` runs.
    """
    return (
        "import os, sys\n"
        "if sys.argv.pop() == 'pure':\n"
        f"    os.environ[{_PURE_SWITCH!r}] = '1'\n"
        f"{main}\n"
    )


def preload_runtime() -> None:
    """Import everything a session needs, while files can still be opened."""
    # Paths that import lazily: error reports, host names (socket calls
    # encode them with IDNA before the kernel refuses them), rlimits.
    import encodings.idna  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401

    channel_module.preload()
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401  (optional: the worker's loop when installed)
    os.environ.pop(_PURE_SWITCH, None)  # the build is chosen: the guest sees an empty environment


def uses_uvloop(choice: str) -> bool:
    """Whether the worker runs uvloop for a policy's ``loop`` (``auto``: when it is installed).

    uvloop is imported, if at all, before confinement (:func:`preload_runtime`).
    """
    if choice == "asyncio":
        return False
    if "uvloop" in sys.modules:
        return True
    if choice == "uvloop":
        raise ModuleNotFoundError("the policy asks for uvloop, which is not installed")
    return False


def _run(fn: Callable[..., Any], *args: Any, loop: str) -> None:
    options = {"use_uvloop": True} if uses_uvloop(loop) else {}
    anyio.run(fn, *args, backend="asyncio", backend_options=options)


@far(name="WorkerAdmin")
class WorkerAdmin:
    """The worker's bootstrap: the host evaluates guest code through it."""

    def __init__(self, report: dict[str, Any]) -> None:
        self._report = report

    def report(self) -> dict[str, Any]:
        """Which layers applied (name -> ``{"ok": bool, "detail": str}``) and the pid."""
        return self._report

    async def evaluate(self, source: str, endowments: dict[str, Any]) -> Any:
        """Run ``source`` with ``E`` and ``endowments`` as its only globals; its ``result``."""
        if type(source) is not str or type(endowments) is not dict:
            raise TypeError("evaluate(source: str, endowments: dict)")
        code = compile(
            source, "<guest>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        scope: dict[str, Any] = {"__builtins__": builtins, "__name__": "__guest__", "E": E}
        scope.update(endowments)
        outcome = eval(code, scope)  # the guest's own process: this is what it is for
        if inspect.iscoroutine(outcome):
            await outcome
        result = scope.get("result")
        check_passable(result)
        return result


class _PolicyImports:
    """A meta-path finder that refuses every module not loaded before confinement.

    No file can be opened any more, so the import would fail anyway, with an
    error that depends on the interpreter's layout; this says why.
    """

    def __init__(self, modules: list[str]) -> None:
        self._modules = modules

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        raise ModuleNotFoundError(
            f"No module named {name!r} in this compartment: its policy preloads "
            f"{self._modules}", name=name,
        )


def rehearse() -> None:
    """Run what a worker's start runs, once, against itself: a fresh fork of the
    zygote then finds those pages already its own (copy-on-write has happened)."""
    _run(channel_module.rehearse, WorkerAdmin({}), loop="auto")


def _isolate_files(channel_fd: int) -> None:
    if channel_fd != CHANNEL_FD:
        os.dup2(channel_fd, CHANNEL_FD)
        os.close(channel_fd)
    os.set_inheritable(CHANNEL_FD, False)
    import resource  # POSIX only: imported where it is used

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(CHANNEL_FD + 1, min(soft, 65536))


async def _serve(report: dict[str, Any], max_message: int) -> None:
    sock = socket.socket(fileno=CHANNEL_FD)
    async with open_vat() as vat, anyio.create_task_group() as tg:
        channel = await channel_module.open_channel(sock, tg)
        connection = channel_module.session_over(
            channel, vat, bootstrap=WorkerAdmin(report), max_message=max_message, name="worker"
        )
        await connection.run()
        tg.cancel_scope.cancel()


def child_main(channel_fd: int, policy: dict[str, Any]) -> None:
    """Confine this process as ``policy`` says and serve the host; never returns."""
    status = 0
    try:
        _isolate_files(channel_fd)
        for name in policy["modules"]:
            importlib.import_module(name)
        mode = policy["mode"]
        if mode == "unconfined":
            layers: dict[str, _kernel.Layer] = {}
        else:
            try:
                layers = _kernel.confine(
                    policy["limits"], policy["fs_read"], strict=mode == "strict"
                )
            except LayerUnavailable as exc:
                print(f"{STRICT_FAILED} {exc.layer} {exc.reason}", file=sys.stderr, flush=True)
                os._exit(EXIT_STRICT)
        sys.meta_path.insert(0, _PolicyImports(list(policy["modules"])))
        loop = policy["loop"]
        report = {
            "mode": mode,
            "pid": os.getpid(),
            "layers": {n: {"ok": layer.ok, "detail": layer.detail} for n, layer in layers.items()},
            "loop": "uvloop" if uses_uvloop(loop) else "asyncio",
        }
        _run(_serve, report, int(policy["limits"]["max_message"]), loop=loop)
    except BaseException as exc:  # the worker ends here whatever happened
        print(f"captp.confine worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main() -> None:
    """Cold start: ``python -I -c program(...) FD POLICY_JSON BUILD`` (see :func:`program`)."""
    preload_runtime()
    child_main(int(sys.argv[1]), json.loads(sys.argv[2]))


if __name__ == "__main__":
    main()
