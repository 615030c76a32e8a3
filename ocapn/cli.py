"""The ``ocapn`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``ocapn`` command."""
    parser = argparse.ArgumentParser(prog="ocapn", description="OCapN for Python.")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
