"""The vat runs async far methods called from its own turns."""

from __future__ import annotations

import anyio
import pytest

from captp import E, far, open_vat


@far
class Slow:
    async def double(self, x: int) -> int:
        await anyio.sleep(0)
        return 2 * x

    def via_turn(self, x: int) -> object:
        # An eventual send made inside a vat turn that reaches an async method.
        return E(self).double(x)


@pytest.mark.anyio
async def test_async_method_called_from_a_vat_turn() -> None:
    with anyio.fail_after(5):
        async with open_vat():
            assert await E(Slow()).via_turn(21) == 42


@pytest.mark.anyio
async def test_a_closed_vat_is_freed_without_the_cycle_collector() -> None:
    # Its context names it (so that its turns see it as the current vat): closing
    # the vat lets go of that context, and reference counting frees the vat at once.
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        async with open_vat() as vat:
            ran: list[int] = []
            vat.call_soon(ran.append, 1)
            await anyio.sleep(0.01)
            assert ran == [1]
            ref = weakref.ref(vat)
        del vat
        assert ref() is None
    finally:
        gc.enable()
