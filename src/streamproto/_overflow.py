"""Overflow reports for applications: the record both sides hand out, and the log's rate limit.

Rules for this file:

1. An :class:`Overflow` stands for one OVERFLOW gap (one :class:`OverflowWarning` of a
   connection), named by what an application knows: channel, stream id, session.
2. Logging must not let a slow subscriber flood the log: one gap per credit window can still be
   hundreds a second. :class:`OverflowLog` admits one record per :data:`LOG_INTERVAL` seconds
   per stream (server) or subscription (client) and folds the ones in between into the next.
   Time is passed in, as everywhere in the core.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["LOG_INTERVAL", "Overflow", "OverflowLog", "held_back"]

#: Seconds between two log records of one stream (hub) or one subscription (client).
LOG_INTERVAL: Final = 10.0


@attrs.frozen
class Overflow:
    """Seqs ``from_seq..to_seq`` (``dropped`` of them) of a stream were dropped for one
    subscriber that fell behind (drop_oldest policy), and it is told so by one OVERFLOW gap.

    The producer's ``on_overflow`` receives it when the gap is sent, the subscription's when
    the gap arrives; both carry the same seqs. ``session_id`` and ``handle`` name the
    subscriber (its session, and its handle on its connection)."""

    channel: str
    stream_id: str
    session_id: str
    handle: int
    dropped: int
    from_seq: int
    to_seq: int

    def __str__(self) -> str:
        return (
            f"Overflow({self.channel}/{self.stream_id} session={self.session_id[:16]} "
            f"h={self.handle} dropped={self.dropped} {self.from_seq}..{self.to_seq})"
        )


class OverflowLog:
    """The rate limit of one stream's or one subscription's overflow log records."""

    __slots__ = ("_dropped", "_gaps", "_next")

    def __init__(self) -> None:
        self._next = float("-inf")
        self._gaps = 0  # overflows not logged since the last record
        self._dropped = 0  # and their seqs

    def admit(self, record: Overflow, now: float) -> tuple[int, int] | None:
        """None: do not log ``record`` (it is counted into the next record). Else log it now,
        with the ``(gaps, seqs)`` that were held back since the last record."""
        if now < self._next:
            self._gaps += 1
            self._dropped += record.dropped
            return None
        held = (self._gaps, self._dropped)
        self._next = now + LOG_INTERVAL
        self._gaps = self._dropped = 0
        return held


def held_back(held: tuple[int, int]) -> str:
    """The tail of a log record that sums up the overflows held back before it."""
    gaps, seqs = held
    if not gaps:
        return ""
    return f" (and {gaps} earlier overflows, {seqs} seqs, not logged one by one)"
