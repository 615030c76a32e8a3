"""Transports that carry CapTP sessions.

* :mod:`netlayers.memory`: an in-memory pipe (:func:`connect_pair` joins two
  OCapN connections in one process, for tests of your own far objects);
* :mod:`netlayers.stream`: a channel over any anyio byte stream (TCP).
"""

from netlayers.memory import MemoryChannel, connect_pair, memory_pipe
from netlayers.stream import StreamChannel

__all__ = ["MemoryChannel", "StreamChannel", "connect_pair", "memory_pipe"]
