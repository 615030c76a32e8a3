"""Typed remote calls that mypy --strict rejects: each line marked `# E: code` is an error.

(tests/test_typing.py runs mypy on this file and compares; the project's own
mypy run skips it.)
"""

from captp import E, RemoteRef

from .far_interfaces import Store


async def misuse(store: RemoteRef[Store]) -> None:
    await E(store).gett("a")  # E: attr-defined
    await E(store).get()  # E: call-arg
    await E(store).get("a", "b")  # E: call-arg
    await E(store).get(1)  # E: arg-type
    n: int = await E(store).keys()  # E: assignment
    await E(E(store).counter(1)).decr()  # E: attr-defined
    m: str = await E(E(store).counter(1)).incr()  # E: assignment
    E(store).get("a") + 1  # E: operator
    print(n, m)
