"""The build chooser as :mod:`ocapn` sees it: compiled (mypyc) or pure Python.

The choice is made once per process by :mod:`captp._native` (the lowest
layer, so a process that imports only :mod:`captp` chooses too), for the
engine's, the codec's and the wire's modules together; this module names it
for the codec (``ocapn.syrup.COMPILED``, ``ocapn.cbor.COMPILED``) and the
benchmarks.  Decisions: ``spec-notes/0040``.
"""

from __future__ import annotations

from captp._native import COMPILED, MANIFEST, MODULES, REASON, compiled_files, describe

__all__ = ["COMPILED", "MANIFEST", "MODULES", "REASON", "compiled_files", "describe"]
