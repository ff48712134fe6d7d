"""A clock for tests: time stands still until you move it (trio's ``MockClock`` in spirit)."""

from __future__ import annotations

from .._errors import ErrorCode, LocalProtocolError

__all__ = ["MockClock"]


class MockClock:
    """A callable clock: ``clock()`` returns the current time; ``advance(seconds)`` moves it.

    Pass it as a :class:`~streamproto.Hub`'s ``clock`` and ``clock()`` as a connection's
    ``now``, then drive timers deterministically::

        clock = MockClock()
        conn = Connection(Role.CLIENT, now=clock())
        clock.advance(15)
        conn.handle_timer(clock())
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the time forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "time only moves forward")
        self._now += seconds
        return self._now
