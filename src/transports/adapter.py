"""The public API for writing adapters: URL schemes, the drivers, and the backends' bases.

There are two ways to extend ``transports`` (``docs/adapters.md`` is the guide):

**A new transport for our backends** — a URL scheme. :func:`register_scheme` tells one
backend how to listen and dial for it; ``serve(hub, url)`` and ``connect(url)`` of that
backend then take its URLs, and everything above the byte stream (framing, handshake, resume,
flow control, limits, logging, statistics) is the backend's as on ``tcp://``. The signatures
are the backend's own:

=========== ====================================================== ============================
backend     ``listen``                                             ``connect``
=========== ====================================================== ============================
``asyncio`` ``async (url, protocol_factory, backlog)`` → an        ``async (url,
            ``asyncio.AbstractServer`` serving ``protocol_factory`` protocol_factory)`` →
                                                                   ``(transport, protocol)``
``trio``    ``async (url, backlog)`` → a list of                   ``async (url)`` →
            ``trio.abc.Listener[trio.abc.Stream]``                  ``trio.abc.Stream``
``sync``    ``(url, backlog)`` → a listener with ``accept()``,     ``(url, timeout)`` → a
            ``fileno()``, ``getsockname()`` and ``close()``          connected ``socket.socket``
=========== ====================================================== ============================

``unix://`` is registered this way on all three backends (:data:`UNIX`).

**A new backend** (another event loop, another framework) — build on the drivers and bases
the asyncio, trio and thread backends are made of:

- :class:`ServerDriver` — one accepted byte stream on the server: framing, a server
  ``Connection`` and its hub ``Peer``. Feed it ``receive(data)``, write ``step()`` after
  every call and whenever its ``wakeup`` fires, and when ``deadline()`` passes; report
  ``output_blocked``; call ``connection_lost()`` when the stream is gone; close once
  ``finished``.
- :class:`ClientCore` — a client's state across connections (subscriptions, uploads, resume,
  backoff): ``new_connection()`` per byte stream, then the same ``receive`` / ``step`` /
  ``deadline`` loop, ``lost()`` when the stream dies and ``reconnect_delay()`` to pace retries.
- :class:`Stepping` and :class:`Side` — what both have in common (one writer loop drives
  either).
- :class:`ServerBase`, :class:`ProducerBase` (:class:`AsyncProducerBase` for async loops),
  :class:`ServerUploadBase`, :class:`ClientBase`, :class:`SubscriptionBase`,
  :class:`UploadBase`, :class:`BidiBase` (:class:`AsyncBidiBase` for async loops) — the
  loop-independent halves of a backend's public classes. A backend subclasses them and
  supplies the hooks they declare:
  ``ServerBase._producer``, ``_upload`` (wrap the hub's objects); ``ProducerBase._serve``
  (run an open handler; ``AsyncProducerBase`` has it, given ``_signals``, ``_interrupting``
  and ``write``); ``_start`` (run a handler as
  a task or thread; errors to :func:`handler_failed`), ``_rearm_hub`` (the hub's deadline
  moved); ``ClientBase._wake`` (flush the stream soon) and ``_subscription`` (wrap a
  :class:`SubscriptionCore`); ``AsyncQueries._ask`` (status, list and delete of an async
  client: wait until ready, send ``ClientBase._query(request, notify)``, wait for
  :class:`QueryCore` ``.done``); ``ServerUploadBase._serve`` (run an upload handler and give
  what it returns to ``_returned``, the upload's result); ``Uploads._upload_type`` (the
  client's upload class, an :class:`UploadBase`, whose ``_made`` sets up its wakeup);
  ``Bidis._bidi_type`` (its bidirectional stream class, a :class:`BidiBase` mixed with that
  upload class; ``AsyncBidiBase``, put before an async upload class, has ``async with`` and
  ``end`` from its ``__aenter__`` and ``_drained``); and
  ``_lock``, held around every call into the core (a real lock only where threads share it).
  The bases call ``ServerBase._driver(None, clock, wakeup)`` for each accepted stream (None:
  the listener's framing; a backend with its own passes a :class:`Framing`) and
  ``ServerBase._gone(driver)`` when it ends. These underscored
  names are hooks for subclasses, not for applications, and are as stable as the public ones.

:mod:`transports.testing` (``Adapter``, ``pair_factory``) and
:func:`streamproto.testing.check_adapter` test either kind.
"""

from __future__ import annotations

from ._common import (
    FLUSH_SLICE,
    AsyncBidiBase,
    AsyncProducerBase,
    AsyncQueries,
    BidiBase,
    Bidis,
    ClientBase,
    ClientCore,
    Pacer,
    ProducerBase,
    QueryCore,
    QueryRequest,
    ServerBase,
    ServerDriver,
    ServerUploadBase,
    Side,
    Stepping,
    SubscriptionBase,
    SubscriptionCore,
    UploadBase,
    UploadCore,
    Uploads,
    always_reads,
    handler_failed,
    read_upload,
    server_config,
)
from ._framing import Framing, RawFraming, WsFraming
from ._schemes import (
    HTTP,
    TCP,
    UNIX,
    WS,
    Endpoint,
    Kind,
    Scheme,
    UnknownSchemeError,
    Url,
    bound_port,
    endpoint,
    parse_url,
    register_scheme,
    remove_socket_file,
    schemes,
    unix_listener,
)

__all__ = [
    "FLUSH_SLICE",
    "HTTP",
    "TCP",
    "UNIX",
    "WS",
    "AsyncBidiBase",
    "AsyncProducerBase",
    "AsyncQueries",
    "BidiBase",
    "Bidis",
    "ClientBase",
    "ClientCore",
    "Endpoint",
    "Framing",
    "Kind",
    "Pacer",
    "ProducerBase",
    "QueryCore",
    "QueryRequest",
    "RawFraming",
    "Scheme",
    "ServerBase",
    "ServerDriver",
    "ServerUploadBase",
    "Side",
    "Stepping",
    "SubscriptionBase",
    "SubscriptionCore",
    "UnknownSchemeError",
    "UploadBase",
    "UploadCore",
    "Uploads",
    "Url",
    "WsFraming",
    "always_reads",
    "bound_port",
    "endpoint",
    "handler_failed",
    "parse_url",
    "read_upload",
    "register_scheme",
    "remove_socket_file",
    "schemes",
    "server_config",
    "unix_listener",
]
