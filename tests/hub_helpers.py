"""An in-memory harness for hub tests: a fake clock, a counter id source, and client connections
attached to one hub, with a ``pump`` that moves bytes until everyone is quiet.

Each client is a :class:`streamproto.testing.ConnectionPair` whose server side is driven by the
hub, as an adapter would drive it: every event the server connection reports (from
``receive_data`` and from ``take_events`` after ``data_to_send``) goes to ``peer.handle_events``.
The pair checks both event streams on every feed (contiguous seqs, nothing after a terminal
event), and cuts the bytes at random points when the harness has a seed.
"""

from __future__ import annotations

import random

from streamproto import (
    Authenticate,
    Authorize,
    Config,
    Connection,
    DataReceived,
    Event,
    HandshakeCompleted,
    Hub,
    Peer,
    ReplayStore,
)
from streamproto.testing import ConnectionPair, MockClock


class CounterIds:
    """Ids ``id1``, ``id2``, ... in the order they are asked for."""

    def __init__(self, prefix: str = "id") -> None:
        self.prefix = prefix
        self.issued: list[str] = []

    def __call__(self) -> str:
        value = f"{self.prefix}{len(self.issued) + 1}"
        self.issued.append(value)
        return value


class Client:
    """One client connection and the server connection the hub drives for it."""

    def __init__(self, harness: HubHarness, pair: ConnectionPair) -> None:
        self.harness = harness
        self.pair = pair
        self.conn: Connection = pair.client
        self.server: Connection = pair.server
        self.wakeups = 0
        self.peer: Peer = harness.hub.attach(pair.server, self._wakeup)
        #: Everything the client connection reported, in order.
        self.events: list[Event] = []
        #: Everything the server connection reported (and the hub was given), in order.
        self.server_events: list[Event] = []
        self.gone = False  # the transport was closed: no more pumping
        self._taken = 0

    def _wakeup(self) -> None:
        self.wakeups += 1

    def take(self) -> list[Event]:
        """The client's events since the last ``take``."""
        new = self.events[self._taken :]
        self._taken = len(self.events)
        return new

    def of(self, handle: int) -> list[Event]:
        """The client's events for ``handle``."""
        return [e for e in self.events if getattr(e, "handle", None) == handle]

    def chunks(self, handle: int) -> list[tuple[int, bytes]]:
        """``(seq, chunk)`` of every chunk delivered on ``handle``, in order."""
        return [
            (e.seq + i, chunk)
            for e in self.of(handle)
            if isinstance(e, DataReceived)
            for i, chunk in enumerate(e.chunks)
        ]

    @property
    def handshake(self) -> HandshakeCompleted:
        """The last handshake this client completed."""
        return [e for e in self.events if isinstance(e, HandshakeCompleted)][-1]

    def step(self) -> bool:
        """Move what each side has to send once; return whether anything moved."""
        if self.gone:
            return False
        moved = False
        data = self.conn.data_to_send()
        self.events += self.conn.take_events()
        if data:
            moved = True
            self._to_hub(self.pair.feed(self.server, data))
        data = self.server.data_to_send()
        self._to_hub(self.server.take_events())
        if data:
            moved = True
            self.events += self.pair.feed(self.conn, data)
        return moved

    def _to_hub(self, events: list[Event]) -> None:
        if events:
            self.server_events += events
            self.peer.handle_events(events)

    def disconnect(self) -> None:
        """The transport closes: the server connection sees the end of input and the hub gets
        its ConnectionTerminated; the client sees the end of input too."""
        self._to_hub(self.server.receive_data(b""))
        self.events += self.conn.receive_data(b"")
        self.gone = True


class HubHarness:
    """A hub with a fake clock and counter ids, and the clients attached to it.

    ``seed`` cuts every transfer at random points (None: whole).
    """

    def __init__(
        self,
        *,
        store: ReplayStore | None = None,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = MockClock()
        self.ids = CounterIds()
        self.hub = Hub(
            clock=self.clock,
            ids=self.ids,
            store=store,
            authenticate=authenticate,
            authorize=authorize,
        )
        self.rng = None if seed is None else random.Random(seed)
        self.clients: list[Client] = []

    def connect(
        self,
        client_config: Config | None = None,
        server_config: Config | None = None,
        *,
        resume_token: str = "",
        auth: bytes = b"",
        pump: bool = True,
    ) -> Client:
        """A new client attached to the hub (handshake done unless ``pump`` is False)."""
        pair = ConnectionPair(
            client_config,
            server_config,
            now=self.clock(),
            rng=self.rng,
            resume_token=resume_token,
            auth=auth,
        )
        client = Client(self, pair)
        self.clients.append(client)
        if pump:
            self.pump()
        return client

    def pump(self, max_rounds: int = 100_000) -> None:
        """Move bytes between every client and the hub until nothing moves."""
        for _ in range(max_rounds):
            moved = False
            for client in self.clients:
                moved = client.step() or moved
            if not moved:
                return
        raise AssertionError("the connections did not go quiet")

    def advance(self, seconds: float) -> None:
        """Move the clock, run the hub's timers, then pump."""
        self.clock.advance(seconds)
        self.hub.handle_timer()
        self.pump()
