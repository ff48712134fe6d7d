"""Who may do what: the hub's authentication and authorization hooks, and what their answers mean.

Rules for this file:

1. The application decides; this module only says how its answers are read, once, for the hub.
   Authentication runs once per connection, on HELLO's ``auth``, and yields a *principal* (any
   object; ``None`` is the anonymous principal) that the session keeps. Authorization runs for
   every SUBSCRIBE, OPEN and UPLOAD, on an immutable :class:`AccessRequest`.
2. Fail closed: a hook that raises, or answers anything but an explicit yes, refuses. A refusal
   with a code the frame cannot carry becomes the default code of that frame (AUTH_FAILED in
   GOAWAY, FORBIDDEN in REJECT), and the mistake is logged.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Final

import attrs

from ._errors import ErrorCode, ErrorKind, LocalProtocolError, is_application_code

__all__ = [
    "AccessRequest",
    "Authenticate",
    "Authorize",
    "Refuse",
    "RequestKind",
]

log = logging.getLogger("streamproto.hub")


def _sendable(_inst: object, _attr: attrs.Attribute[int], code: int) -> None:
    if is_application_code(code):
        return
    try:
        kind = ErrorCode(code).kind
    except ValueError:
        kind = None
    if code == ErrorCode.NO_ERROR or kind not in (ErrorKind.CONNECTION, ErrorKind.STREAM):
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"a refusal's code must be a connection, stream or application code, got {code}",
        )


@attrs.frozen
class Refuse:
    """A hook's refusal: ``code`` and a human ``message`` for the peer.

    From ``authenticate``: a connection code (AUTH_FAILED) or an application code (>= 1000),
    sent in GOAWAY. From ``authorize``: a stream code (FORBIDDEN) or an application code, sent in
    REJECT (or replaced by the unknown-channel reply on a channel that conceals refusals).
    """

    code: int = attrs.field(validator=_sendable)
    message: str = ""


class RequestKind(enum.Enum):
    """The request an :class:`AccessRequest` asks about."""

    SUBSCRIBE = "subscribe"
    OPEN = "open"
    UPLOAD = "upload"
    STATUS = "status"  # a stream's state, without subscribing
    LIST = "list"  # a page of the channel's streams (``stream_id`` is the cursor)
    DELETE = "delete"


@attrs.frozen
class AccessRequest:
    """What an authorization hook decides on: ``principal`` (what ``authenticate`` returned
    for this session; None when anonymous) asks to ``kind`` ``channel``/``stream_id`` with
    ``args``. ``stream_id`` is empty for an OPEN or UPLOAD that lets the server pick one;
    ``args`` is empty for a SUBSCRIBE."""

    principal: object
    kind: RequestKind
    channel: str
    stream_id: str
    args: bytes = b""


#: ``authenticate(auth) -> principal``: any object identifying who connected (None: anonymous),
#: or a :class:`Refuse`. The older answer, a bare ``int``, is read as a refusal with that code.
Authenticate = Callable[[bytes], object]

#: ``authorize(request) -> True | Refuse``: ``True`` (exactly) allows; a :class:`Refuse` refuses
#: with its code; anything else refuses with FORBIDDEN.
Authorize = Callable[[AccessRequest], object]

_HANDSHAKE_KINDS: Final = (ErrorKind.CONNECTION,)
_REQUEST_KINDS: Final = (ErrorKind.STREAM,)


def authenticate(hook: Authenticate, auth: bytes) -> tuple[object, Refuse | None]:
    """Run ``hook`` on HELLO's ``auth``: ``(principal, None)`` to accept, ``(None, refusal)``
    to refuse with a code GOAWAY can carry."""
    try:
        answer = hook(auth)
    except Exception:
        log.exception("the authenticate hook raised: the handshake is refused")
        answer = False
    if answer is False:  # ``return auth == secret`` must not let everyone in
        answer = ErrorCode.AUTH_FAILED
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = Refuse(ErrorCode.AUTH_FAILED) if answer == 0 else _Unchecked(answer, "")
    elif not isinstance(answer, Refuse):
        return answer, None
    return None, _refusal(answer, _HANDSHAKE_KINDS, ErrorCode.AUTH_FAILED, "authentication failed")


def authorize(hook: Authorize, request: AccessRequest) -> Refuse | None:
    """Run ``hook`` on ``request``: None to allow, else the refusal (a code REJECT can
    carry)."""
    try:
        answer = hook(request)
    except Exception:
        log.exception("the authorize hook raised on %s: refused", request.channel)
        answer = None
    if answer is True:
        return None
    if not isinstance(answer, Refuse):
        answer = Refuse(ErrorCode.FORBIDDEN)
    message = f"{request.kind.value} on {request.channel} is not allowed"
    return _refusal(answer, _REQUEST_KINDS, ErrorCode.FORBIDDEN, message)


@attrs.frozen
class _Unchecked:
    # An older hook's bare code, not validated yet.
    code: int
    message: str


def _refusal(
    answer: Refuse | _Unchecked, kinds: tuple[ErrorKind, ...], default: ErrorCode, message: str
) -> Refuse:
    """``answer`` if its frame can carry its code, else ``default``; ``message`` if it has
    none."""
    code = answer.code
    try:
        fits = is_application_code(code) or ErrorCode(code).kind in kinds
    except ValueError:
        fits = False
    if not fits:
        log.error("a hook refused with code %d, which this reply cannot carry", code)
        code = default
    return Refuse(code, answer.message or message)
