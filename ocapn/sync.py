"""Blocking use, for scripts and notebooks: a node on a background thread.

::

    from netlayers import tcp_testing_only
    from ocapn.sync import SyncNode

    with SyncNode(tcp_testing_only(), timeout=10) as node:
        greeter = node.enliven("ocapn://...")   # a SyncRef
        print(greeter.greet("world"))          # waits for the answer, at most 10 s

The node runs in an event loop on a thread of its own (an anyio blocking
portal); every call here hands work to that thread and waits for it.  A
:class:`SyncRef` wraps a reference so that ``ref.method(*args)`` waits for
the answer; references in answers come back wrapped too.  What the blocking
style cannot say (pipelining, many calls at once), :meth:`SyncNode.run`
does: it runs an ``async`` function on the node's thread, where ``E`` works
as usual.

The async objects themselves (``RemoteRef``, ``Promise``) belong to the
node's thread: use them there (inside :meth:`SyncNode.run`), never from
the calling thread.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from captp import E, Promise, RemoteRef, Tagged
from captp.errors import CapTPError
from ocapn.locators import Sturdyref
from ocapn.netlayer import Netlayer
from ocapn.node import Node

__all__ = ["CallTimeout", "SyncNode", "SyncRef"]

T = TypeVar("T")

_UNSET: Any = object()


class CallTimeout(CapTPError, TimeoutError):
    """A blocking call got no answer in time (the call itself may still arrive)."""


class SyncRef:
    """A far reference for blocking code: ``ref.method(*args)`` waits for the answer.

    ``ref.method(*args, timeout=5)`` overrides the node's timeout for one
    call.  ``ref.ref`` is the async reference inside (use it only in
    :meth:`SyncNode.run`).
    """

    __slots__ = ("_node", "ref")

    def __init__(self, node: SyncNode, ref: Any) -> None:
        self._node = node
        self.ref = ref

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any, timeout: float | None = _UNSET) -> Any:
            return self._node.call(self, name, *args, timeout=timeout)

        call.__name__ = name
        return call

    def __call__(self, *args: Any, timeout: float | None = _UNSET) -> Any:
        """Call the far function this references."""
        return self._node.call(self, None, *args, timeout=timeout)

    def __repr__(self) -> str:
        return f"<SyncRef {self.ref!r}>"

    def __eq__(self, other: object) -> bool:
        return type(other) is SyncRef and other.ref is self.ref

    def __hash__(self) -> int:
        return id(self.ref)


class SyncNode:
    """An OCapN :class:`~ocapn.Node` running on a background thread, used by blocking calls.

    ``with SyncNode(netlayer, ...) as node:`` starts the thread and the node,
    and stops both at the end.  ``timeout`` (seconds, ``None`` for none) is
    how long each blocking call waits unless told otherwise; ``backend`` is
    the event loop (``"asyncio"`` or ``"trio"``); other keyword arguments go
    to :class:`~ocapn.Node`.
    """

    def __init__(
        self,
        *netlayers: Netlayer,
        timeout: float | None = 30.0,
        backend: str = "asyncio",
        **node_options: Any,
    ) -> None:
        self.timeout = timeout
        self._backend = backend
        self._netlayers = netlayers
        self._node_options = node_options
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._node_cm: AbstractContextManager[Node] | None = None
        self._node: Node | None = None

    # -- lifetime ---------------------------------------------------------------------

    def __enter__(self) -> SyncNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the thread and the node (``with`` does this)."""
        if self._portal is not None:
            raise RuntimeError("this SyncNode is already running")
        self._portal_cm = start_blocking_portal(self._backend)
        portal = self._portal_cm.__enter__()
        try:
            node = Node(*self._netlayers, **self._node_options)
            node_cm = portal.wrap_async_context_manager(node)
            self._node = node_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None
            raise
        self._portal, self._node_cm = portal, node_cm

    def close(self) -> None:
        """Stop the node (its sessions end) and the thread; idempotent."""
        node_cm, portal_cm = self._node_cm, self._portal_cm
        self._node_cm = self._portal_cm = None
        self._portal = None
        self._node = None
        try:
            if node_cm is not None:
                node_cm.__exit__(None, None, None)
        finally:
            if portal_cm is not None:
                portal_cm.__exit__(None, None, None)

    @property
    def node(self) -> Node:
        """The async node (use it only on its own thread: inside :meth:`run`)."""
        if self._node is None:
            raise RuntimeError("the SyncNode is not running: use `with SyncNode(...) as node:`")
        return self._node

    def _running_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("the SyncNode is not running: use `with SyncNode(...) as node:`")
        return self._portal

    # -- blocking calls ----------------------------------------------------------------

    def run(
        self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = _UNSET
    ) -> T:
        """Run ``await fn(*args)`` on the node's thread and return its result.

        Within ``fn``, ``E``, promises and pipelining work as in async code.
        """
        timeout = self.timeout if timeout is _UNSET else timeout
        result: T = self._running_portal().call(self._within, timeout, fn, args)
        return result

    async def _within(
        self, timeout: float | None, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> T:
        try:
            with anyio.fail_after(math.inf if timeout is None else timeout):
                return await fn(*args)
        except TimeoutError:
            raise CallTimeout(f"no answer within {timeout} s") from None

    def publish(self, obj: Any, swiss_num: bytes | None = None) -> str:
        """Make ``obj`` fetchable; its ``ocapn://`` URI."""
        node = self.node
        sturdyref: Sturdyref = self._running_portal().call(self._publish, node, obj, swiss_num)
        return str(sturdyref)

    @staticmethod
    async def _publish(node: Node, obj: Any, swiss_num: bytes | None) -> Sturdyref:
        return node.publish(obj, swiss_num)

    def enliven(self, uri: str | Sturdyref, *, timeout: float | None = _UNSET) -> SyncRef:
        """A reference to the object an ``ocapn://`` URI names (dials its node if need be)."""
        node = self.node
        ref = self.run(node.enliven, uri, timeout=timeout)
        return SyncRef(self, ref)

    def call(
        self, ref: SyncRef | Any, method: str | None, *args: Any, timeout: float | None = _UNSET
    ) -> Any:
        """Call ``method(*args)`` on ``ref`` and wait for the answer.

        ``method`` is a Python name (``make_counter`` calls ``make-counter``,
        as ``E`` does); ``None`` calls a far function.  References in the
        answer come back as :class:`SyncRef`.
        """
        target = ref.ref if type(ref) is SyncRef else ref
        return self._wrap(self.run(self._send, target, method, _unwrap(args), timeout=timeout))

    @staticmethod
    async def _send(target: Any, method: str | None, args: tuple[Any, ...]) -> Any:
        proxy = E(target)
        promise: Promise = (proxy if method is None else getattr(proxy, method))(*args)
        return await promise

    def _wrap(self, value: Any) -> Any:
        kind = type(value)
        if kind is RemoteRef:
            return SyncRef(self, value)
        if kind is list:
            return [self._wrap(v) for v in value]
        if kind is dict:
            return {k: self._wrap(v) for k, v in value.items()}
        if kind is Tagged:
            return Tagged(value.tag, self._wrap(value.payload))
        return value


def _unwrap(value: Any) -> Any:
    kind = type(value)
    if kind is SyncRef:
        return value.ref
    if kind is tuple:
        return tuple(_unwrap(v) for v in value)
    if kind is list:
        return [_unwrap(v) for v in value]
    if kind is dict:
        return {k: _unwrap(v) for k, v in value.items()}
    return value
