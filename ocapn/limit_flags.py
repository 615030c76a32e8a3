"""``ocapn serve`` flags for every field of :class:`captp.limits.Limits`.

``--max-sessions 100``, ``--idle-timeout 600``, ``--idle-timeout none``, ...:
one flag per field, its name with dashes, defaults from
:data:`captp.limits.DEFAULT_LIMITS`.
"""

from __future__ import annotations

import argparse
import dataclasses

from captp.limits import DEFAULT_LIMITS, Limits

__all__ = ["add_limit_flags", "limits_from_args"]


def _seconds(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds or 'none', not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("seconds must be positive")
    return value


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """Add one ``--field-name`` flag per :class:`Limits` field to ``parser``."""
    group = parser.add_argument_group("limits (see spec-notes/0039)")
    for field in dataclasses.fields(Limits):
        default = getattr(DEFAULT_LIMITS, field.name)
        timeout = field.name.endswith("_timeout")
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest="limit_" + field.name,
            type=_seconds if timeout else _count,
            default=default,
            metavar="SECONDS" if timeout else "N",
            help=f"default {default}",
        )


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` the flags of :func:`add_limit_flags` ask for."""
    return Limits(**{
        field.name: getattr(args, "limit_" + field.name) for field in dataclasses.fields(Limits)
    })
