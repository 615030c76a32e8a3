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
