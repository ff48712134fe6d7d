"""Connection limits and defaults (spec section 18). Every limit is here, with its reason."""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import ErrorCode, LocalProtocolError
from ._frames import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MIN_MAX_FRAME_SIZE,
    MIN_UNKNOWN_BYTES,
    MIN_UNKNOWN_FRAMES,
    U32,
    OverflowPolicy,
)

__all__ = ["MAX_CREDIT", "MAX_MESSAGE_BYTES", "MIN_KEEPALIVE_MS", "Config"]

#: Outstanding credit may not exceed this many chunks or bytes (a CREDIT that would take it
#: higher is a FLOW_CONTROL_ERROR), so counters stay small ints and windows stay meaningful.
MAX_CREDIT = 2**31 - 1
#: Error messages are truncated to this many UTF-8 bytes before they are sent.
MAX_MESSAGE_BYTES = 1024
#: The shortest keepalive interval (R-SET-30): one second, MQTT's smallest nonzero Keep Alive.
#: A peer may not make the other side wake up and ping more often than that.
MIN_KEEPALIVE_MS = 1000


def _in_range(low: float, high: float) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if not low <= value <= high:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"{attr.name} must be in {low}..{high}, got {value}"
            )

    return check


def _keepalive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if value != 0 and not MIN_KEEPALIVE_MS / 1000 <= value <= U32 / 1000:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"{attr.name} must be 0 (off) or in {MIN_KEEPALIVE_MS / 1000}..{U32 / 1000}, "
            f"got {value}",
        )


@attrs.frozen(kw_only=True)
class Config:
    """Limits and defaults of one connection. Times are in seconds.

    The defaults suit a server with thousands of connections: 1 MiB of credit window per
    subscription bounds what one slow consumer can pin, and the per-connection cap bounds the
    sum.
    """

    #: Largest frame body this side accepts (announced as MAX_FRAME_SIZE).
    max_frame_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE,
        validator=_in_range(MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT),
    )
    #: Largest reassembled chunk this side accepts (announced as MAX_CHUNK_SIZE).
    max_chunk_size: int = attrs.field(default=1 << 20, validator=_in_range(1, U32))
    #: Keepalive interval; 0 disables, else at least 1 second (R-SET-30). A client proposes,
    #: the server's answer binds both.
    keepalive: float = attrs.field(default=15.0, validator=_keepalive)
    #: Time from connection start to a completed handshake.
    handshake_timeout: float = attrs.field(default=10.0, validator=_in_range(0.001, 3600))
    #: Server: concurrent subscriptions per connection (announced as MAX_SUBSCRIPTIONS).
    max_subscriptions: int = attrs.field(default=4096, validator=_in_range(1, U32))
    #: Server: concurrent uploads per connection (announced as MAX_UPLOADS).
    max_uploads: int = attrs.field(default=64, validator=_in_range(1, U32))
    #: Server: how long a disconnected session is kept (announced as SESSION_GRACE_MS).
    session_grace: float = attrs.field(default=30.0, validator=_in_range(0, U32 / 1000))
    #: Server: resumable uploads that completed which a session remembers, so that a resume
    #: whose UPLOAD_RESULT was lost with its connection gets the same result (R-UPR-6); the
    #: oldest is forgotten first, and its resume is refused with UNKNOWN_UPLOAD. Each holds
    #: its result (at most 16 KiB) until the session ends. 0 remembers none.
    max_completed_uploads: int = attrs.field(default=16, validator=_in_range(0, U32))
    #: Receiver: credit window granted per subscription (client) or upload (server).
    window_chunks: int = attrs.field(default=256, validator=_in_range(0, MAX_CREDIT))
    window_bytes: int = attrs.field(default=1 << 20, validator=_in_range(0, MAX_CREDIT))
    #: Receiver: return credit as events are handed out. False: call ``consume`` yourself.
    auto_credit: bool = True
    #: Sender: chunks and bytes queued per handle beyond the peer's credit.
    max_queued_chunks: int = attrs.field(default=256, validator=_in_range(1, MAX_CREDIT))
    max_queued_bytes: int = attrs.field(default=1 << 20, validator=_in_range(1, MAX_CREDIT))
    #: Sender: bytes queued on the whole connection, credited or not.
    max_connection_queued_bytes: int = attrs.field(
        default=64 << 20, validator=_in_range(1, 1 << 40)
    )
    #: Server: the policy of a subscription that asked for DEFAULT and was accepted without one.
    default_policy: OverflowPolicy = attrs.field(default=OverflowPolicy.DROP_OLDEST)
    #: Both: control frames (PONG, ACCEPT, REJECT, CREDIT, ...) queued but not yet taken by
    #: ``data_to_send``; a peer that makes more pile up than this, not reading them, gets
    #: GOAWAY EXCESSIVE_LOAD (R-LIM-4).
    max_queued_control_frames: int = attrs.field(default=10_000, validator=_in_range(1, U32))
    #: Client: the highest handle this connection may allocate (u32 on the wire).
    max_handle: int = attrs.field(default=U32, validator=_in_range(1, U32))
    #: Both: frames of unknown type, and bytes of their bodies, accepted in a row with no frame
    #: of a known type between them; past either, GOAWAY EXCESSIVE_LOAD (R-FWD-30). Skipping
    #: an unknown frame costs little, but not nothing: these bound what a peer can make this
    #: side do for frames that change nothing. The defaults are the minimum every receiver
    #: grants, which a conforming sender never exceeds (it sends a PING in between).
    max_unknown_frames: int = attrs.field(
        default=MIN_UNKNOWN_FRAMES, validator=_in_range(MIN_UNKNOWN_FRAMES, U32)
    )
    max_unknown_bytes: int = attrs.field(
        default=MIN_UNKNOWN_BYTES, validator=_in_range(MIN_UNKNOWN_BYTES, 1 << 40)
    )
    #: Server adapters: connections served at once; the next is refused with GOAWAY
    #: SERVER_BUSY (R-TR-20). Below a default ``ulimit -n`` of 1024 descriptors.
    max_connections: int = attrs.field(default=1000, validator=_in_range(1, U32))
    #: Server adapters: accepted connections whose handshake is not over; the next is refused
    #: with GOAWAY SERVER_BUSY (R-TR-20). Each costs buffers and a handshake timer, and
    #: idle handshakes are the cheapest way to hold a server's sockets.
    max_pending_handshakes: int = attrs.field(default=128, validator=_in_range(1, U32))
    #: Server adapters: the listen backlog (the kernel caps it at ``net.core.somaxconn``).
    #: Large enough that a burst of connects waits in the kernel instead of being dropped
    #: and retried by the client's TCP after a second or more.
    listen_backlog: int = attrs.field(default=1024, validator=_in_range(1, 65535))
    #: Server adapters: how long a connection's transport may take no output (its buffer
    #: above the high-water mark) before the connection ends with EXCESSIVE_LOAD (R-LIM-20).
    #: Twice the keepalive interval: a live peer reads at least that often.
    output_stall_timeout: float = attrs.field(default=30.0, validator=_in_range(0.001, 3600))

    @default_policy.validator
    def _check_policy(self, _attr: attrs.Attribute[OverflowPolicy], value: OverflowPolicy) -> None:
        if value is OverflowPolicy.DEFAULT:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, "default_policy must be a concrete policy"
            )
