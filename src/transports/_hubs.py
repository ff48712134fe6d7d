"""The defaults the adapters give a hub: the clock they run on and 128-bit random ids.

The core is pure and takes both as arguments (``Hub(clock=..., ids=...)``); every entry point
of the adapters that makes a hub for the application makes it here, so ids are unguessable
unless the application deliberately injects something else.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

from streamproto import Authenticate, Authorize, Hub, ReplayStore

__all__ = ["ID_BYTES", "default_ids", "new_hub"]

#: Random bytes per id: 128 bits, as R-SESS-1 asks of resume tokens.
ID_BYTES: Final = 16


def default_ids() -> str:
    """A fresh id of 128 random bits from the operating system's CSPRNG, URL-safe base64
    (22 characters of ``[A-Za-z0-9_-]``, which the stream-id pattern accepts): the adapters'
    source of session ids, resume tokens and server-chosen stream ids."""
    return secrets.token_urlsafe(ID_BYTES)


def new_hub(
    *,
    store: ReplayStore | None = None,
    authenticate: Authenticate | None = None,
    authorize: Authorize | None = None,
) -> Hub:
    """A :class:`streamproto.Hub` on ``time.monotonic`` (the clock the adapters arm the
    hub's timers on) with :func:`default_ids`. See ``Hub`` for the hooks."""
    return Hub(
        clock=time.monotonic,
        ids=default_ids,
        store=store,
        authenticate=authenticate,
        authorize=authorize,
    )
