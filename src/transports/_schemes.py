"""URL schemes: what a URL means, and how each backend listens and dials for it.

Rules for this file:

1. A :class:`Scheme` is backend-independent: how its URLs read (``host:port`` or a path) and
   what runs over its byte streams (our binary framing, WebSocket, or HTTP with WebSocket
   upgrades). ``parse_url`` needs only this part, so a URL can be checked before any backend
   is imported.
2. How a backend opens those byte streams (listen, dial) is registered per backend, by the
   backend module itself for the schemes it ships, by the application for its own. The
   backends look a URL's scheme up here and nowhere else, and an unknown scheme is one typed
   error that lists what is registered.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from streamproto import ErrorCode, LocalProtocolError

from ._framing import Framing, RawFraming, WsFraming

__all__ = [
    "Endpoint",
    "Scheme",
    "UnknownSchemeError",
    "Url",
    "bound_port",
    "endpoint",
    "parse_url",
    "register_scheme",
    "remove_socket_file",
    "schemes",
    "unix_listener",
]

#: What runs over a scheme's byte streams: ``"binary"`` is our framing as on ``tcp://``,
#: ``"websocket"`` is RFC 6455 with our subprotocol, ``"http"`` is an HTTP/1.1 listener
#: (SSE, spec/HTTP.md) that upgrades WebSocket requests on the URL's path; a client dials
#: an ``"http"`` URL as WebSocket.
Kind = Literal["binary", "websocket", "http"]


@attrs.frozen
class Scheme:
    """A URL scheme, independent of any backend.

    ``target`` says how its URLs read: ``"host"`` is ``name://host:port[/path]``, ``"path"``
    is ``name:///absolute/path`` or ``name:relative/path`` (no host, no port). ``unbind``,
    if set, is called with the URL once a server listening on it closed (``unix://``
    removes its socket file).
    """

    name: str
    kind: Kind
    target: Literal["host", "path"] = "host"
    unbind: Callable[[Url], None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Endpoint:
    """How one backend listens and dials for one scheme. The signatures are the backend's
    (see ``docs/adapters.md``): ``listen`` opens the listener a server accepts from,
    ``connect`` opens one client byte stream."""

    scheme: Scheme
    listen: Callable[..., Any]
    connect: Callable[..., Any]


class UnknownSchemeError(LocalProtocolError):
    """A URL's scheme is not registered (for the backend asked, when ``backend`` is set).
    ``registered`` lists the schemes that are, sorted. Code INVALID_ARGUMENT."""

    def __init__(self, scheme: str, registered: tuple[str, ...], backend: str | None) -> None:
        where = "" if backend is None else f" for the {backend} backend"
        listed = ", ".join(f"{name}://" for name in registered) or "none"
        super().__init__(
            ErrorCode.INVALID_ARGUMENT,
            f"no URL scheme {scheme!r} is registered{where} (registered: {listed})",
        )
        self.scheme = scheme
        self.registered = registered
        self.backend = backend


_SCHEMES: dict[str, Scheme] = {}
_ENDPOINTS: dict[str, dict[str, Endpoint]] = {}


def _define(scheme: Scheme) -> None:
    known = _SCHEMES.get(scheme.name)
    if known is not None and known != scheme:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"scheme {scheme.name!r} is already registered as {known}",
        )
    _SCHEMES[scheme.name] = scheme


def register_scheme(
    backend: str,
    scheme: Scheme,
    *,
    listen: Callable[..., Any],
    connect: Callable[..., Any],
    replace: bool = False,
) -> None:
    """Make ``backend``'s ``serve`` and ``connect`` take URLs of ``scheme``: ``listen`` and
    ``connect`` open its byte streams (signatures per backend, see ``docs/adapters.md``).
    A scheme already registered for ``backend`` raises INVALID_ARGUMENT unless ``replace``;
    so does a scheme whose name another registration defined differently."""
    if not scheme.name.isascii() or not scheme.name.isalnum() or not scheme.name[:1].isalpha():
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"a scheme name is a letter, then letters or digits: {scheme.name!r}",
        )
    table = _ENDPOINTS.setdefault(backend, {})
    if scheme.name in table and not replace:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"scheme {scheme.name!r} is already registered for {backend} (pass replace=True)",
        )
    _define(scheme)
    table[scheme.name] = Endpoint(scheme, listen, connect)


def schemes(backend: str | None = None) -> tuple[str, ...]:
    """The registered scheme names, sorted (for ``backend`` only, when given)."""
    names = _SCHEMES if backend is None else _ENDPOINTS.get(backend, {})
    return tuple(sorted(names))


def endpoint(backend: str, url: Url) -> Endpoint:
    """How ``backend`` listens and dials for ``url``; :class:`UnknownSchemeError` if the
    scheme is not registered for it."""
    found = _ENDPOINTS.get(backend, {}).get(url.scheme)
    if found is None:
        raise UnknownSchemeError(url.scheme, schemes(backend), backend)
    return found


@attrs.frozen
class Url:
    """A parsed URL of a registered scheme: ``tcp://host:port``, ``ws://host:port/path``,
    ``http://host:port`` (an HTTP listener that also upgrades WebSocket requests; a client
    dials it as WebSocket), ``unix:///path/to/socket``, or one an application registered.
    A ``"path"`` scheme has ``host`` ``""`` and ``port`` 0."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def kind(self) -> Kind:
        """What runs over this URL's byte streams (see :class:`Scheme`)."""
        return _SCHEMES[self.scheme].kind

    def framing(self, *, client: bool) -> Framing:
        """A fresh framing for this URL."""
        if self.kind == "binary":
            return RawFraming()
        return WsFraming(client, host=f"{self.host}:{self.port}", path=self.path)

    def address(self, port: int) -> str:
        """This URL with ``port`` (a server's address once it listens; ignored by a
        ``"path"`` scheme)."""
        if _SCHEMES[self.scheme].target == "path":
            sep = "://" if self.path.startswith("/") else ":"
            return f"{self.scheme}{sep}{self.path}"
        path = self.path if self.kind == "websocket" else ""
        if self.kind == "http":
            path = self.path if self.path != "/" else ""
        return f"{self.scheme}://{self.host}:{port}{path}"

    def unbind(self) -> None:
        """A server listening on this URL closed: its scheme's ``unbind``, if any."""
        unbind = _SCHEMES[self.scheme].unbind
        if unbind is not None:
            unbind(self)


def parse_url(url: str) -> Url:
    """Parse a URL of a registered scheme: ``tcp://host:port``, ``ws://host:port[/path]``,
    ``http://host:port[/path]`` (the path of an ``http`` URL is where WebSocket upgrades are
    taken, ``/`` by default), ``unix:///path`` or ``unix:relative/path``. An unknown scheme
    raises :class:`UnknownSchemeError`, a malformed URL INVALID_ARGUMENT."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise UnknownSchemeError(parts.scheme, schemes(), None)
    if scheme.target == "path":
        if parts.netloc or not parts.path or parts.query or parts.fragment:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"expected {scheme.name}:///absolute/path or {scheme.name}:relative/path: {url!r}",
            )
        return Url(scheme.name, "", 0, parts.path)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT, f"expected {scheme.name}://host:port[/path]: {url!r}"
        )
    return Url(scheme.name, parts.hostname, port, parts.path or "/")


# -- the schemes this package defines -----------------------------------------------------------


def unix_listener(path: str, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path`` (blocking; the backends wrap it). A socket file
    left there by a server that did not close removes first, as asyncio does; any other file
    in the way is an error (``OSError``)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_port(sockname: object) -> int:
    """The port of a listening socket's ``getsockname()`` (0 for a Unix socket's path)."""
    return int(sockname[1]) if isinstance(sockname, tuple) else 0


def remove_socket_file(url: Url) -> None:
    """Remove the socket file of a ``unix://`` server that stopped listening (if it is still
    a socket: not a file someone put there since)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(url.path).st_mode):
            os.unlink(url.path)


TCP = Scheme("tcp", "binary")
WS = Scheme("ws", "websocket")
HTTP = Scheme("http", "http")
UNIX = Scheme("unix", "binary", target="path", unbind=remove_socket_file)
for _scheme in (TCP, WS, HTTP, UNIX):
    _define(_scheme)
