"""``python -m streamproto``: the command line, the same as the ``streamproto`` script.

The command line does I/O, so it lives with the adapters (``transports.cli``, same
distribution; docs/cli.md). This module only hands over to it. It runs when executed, never
when ``streamproto`` is imported, so importing the core still loads no I/O module.
"""

from __future__ import annotations

import sys

from transports.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
