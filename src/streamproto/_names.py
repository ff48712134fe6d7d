"""Channel names and stream ids: the documented patterns (spec section 7)."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["CHANNEL_PATTERN", "STREAM_ID_PATTERN", "valid_channel", "valid_stream_id"]

#: ``<namespace>:<name>``: a lower-case namespace, a colon, a name; at most 128 bytes in all.
CHANNEL_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: URL-safe, 1 to 128 characters (RFC 3986 unreserved characters).
STREAM_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.~-]{1,128}")


def valid_channel(name: str) -> bool:
    """Whether ``name`` is a valid channel name."""
    return CHANNEL_PATTERN.fullmatch(name) is not None


def valid_stream_id(stream_id: str) -> bool:
    """Whether ``stream_id`` is a valid stream id."""
    return STREAM_ID_PATTERN.fullmatch(stream_id) is not None
