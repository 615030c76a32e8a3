"""Transports that carry CapTP sessions (see :mod:`ocapn.netlayer` for the interface).

* :mod:`netlayers.tcp_testing`: ``tcp-testing-only``, plain TCP over IPv4 for
  tests and local use (:func:`tcp_testing_only`);
* :mod:`netlayers.memory`: in-memory pipes: :func:`connect_pair` joins two
  bare connections, a :class:`MemoryNetwork` lets several nodes in one
  process reach each other;
* :mod:`netlayers.endo_tcp`: Endo CapTP over TCP (``connect_tcp``,
  ``serve_tcp``), netstring-framed as the Endo daemon speaks it;
* :mod:`netlayers.tcp`: TCP channels, dialled or accepted, with the asyncio
  fast path (:mod:`netlayers.asyncio_tcp`) or anyio streams elsewhere;
* :mod:`netlayers.stream`: a channel over any anyio byte stream.
"""

from netlayers.memory import MemoryChannel, MemoryNetlayer, MemoryNetwork, connect_pair, memory_pipe
from netlayers.stream import StreamChannel
from netlayers.tcp_testing import TcpTestingNetlayer, tcp_testing_only
from ocapn.netlayer import Netlayer

__all__ = [
    "MemoryChannel",
    "MemoryNetlayer",
    "MemoryNetwork",
    "Netlayer",
    "StreamChannel",
    "TcpTestingNetlayer",
    "connect_pair",
    "memory_pipe",
    "tcp_testing_only",
]
