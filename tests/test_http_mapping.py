"""The pure HTTP mapping (streamproto._http): routes, statuses and exchanges against a hub,
with no socket and no HTTP parser."""

from __future__ import annotations

import itertools
import json

import pytest

from streamproto import (
    ChannelOptions,
    Config,
    ErrorCode,
    Hub,
    LocalProtocolError,
    OverflowPolicy,
    Refuse,
    UploadReader,
    Window,
)
from streamproto._http import (
    TRANSITIONS,
    ExchangeState,
    HttpExchange,
    HttpOptions,
    HttpRequest,
    Input,
    Route,
    RouteKind,
    cors_headers,
    default_auth,
    preflight_headers,
    route,
    status_for,
)
from streamproto._sse import SseParser, decode_chunk

OPTIONS = HttpOptions(allow_origins=("http://page",), retry_ms=500)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_hub(**kwargs: object) -> Hub:
    counter = itertools.count(1)
    return Hub(clock=kwargs.pop("clock", Clock()), ids=lambda: f"id{next(counter)}", **kwargs)  # type: ignore[arg-type]


def req(method: str, path: str, query: str = "", **headers: str) -> HttpRequest:
    return HttpRequest(
        method, path, query, tuple((k.replace("_", "-"), v) for k, v in headers.items())
    )


def exchange(
    hub: Hub,
    request: HttpRequest,
    *,
    config: Config | None = None,
    options: HttpOptions = OPTIONS,
    clock: Clock | None = None,
) -> HttpExchange:
    decision = route(request, options)
    assert decision.kind not in (RouteKind.REFUSE, RouteKind.PREFLIGHT), decision
    return HttpExchange(hub, request, decision, config or Config(), options, clock=clock or Clock())


def status(ex: HttpExchange) -> int | None:
    return None if ex.head is None else ex.head[0]


def events(data: bytes) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in SseParser().feed(data)]


def chunks_of(data: bytes) -> list[bytes]:
    return [decode_chunk(e) for e in SseParser().feed(data) if e.event in ("message", "bytes")]


# -- routes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req("GET", "/a:b/s"), Route(RouteKind.SUBSCRIBE, "a:b", "s")),
        (req("GET", "/a:b/s", "after_seq=4"), Route(RouteKind.SUBSCRIBE, "a:b", "s", 4)),
        (
            req("GET", "/a:b/s", "after_seq=" + "0" * 30 + "4"),
            Route(RouteKind.SUBSCRIBE, "a:b", "s", 4),
        ),
        (
            req("GET", "/a:b/s", "after_seq=4", last_event_id="7"),
            Route(RouteKind.SUBSCRIBE, "a:b", "s", 7),
        ),
        (req("GET", "/a:b/s", last_event_id=""), Route(RouteKind.SUBSCRIBE, "a:b", "s")),
        (req("GET", "/a%3Ab/s"), Route(RouteKind.SUBSCRIBE, "a:b", "s")),
        (req("POST", "/a:b"), Route(RouteKind.OPEN, "a:b")),
        (req("POST", "/a:b", "stream_id=q&join=0"), Route(RouteKind.OPEN, "a:b", "q")),
        (req("POST", "/a:b", "stream_id=q&join=1"), Route(RouteKind.OPEN, "a:b", "q", join=True)),
        (req("POST", "/a:b/s/upload", "args=hi"), Route(RouteKind.UPLOAD, "a:b", "s", args=b"hi")),
        (req("GET", "/a:b/s/status"), Route(RouteKind.STATUS, "a:b", "s")),
        (req("DELETE", "/a:b/s"), Route(RouteKind.DELETE, "a:b", "s")),
        (req("GET", "/a:b"), Route(RouteKind.LIST, "a:b", limit=100)),
        (
            req("GET", "/a:b", "state=open,failed&after=k&limit=5"),
            Route(RouteKind.LIST, "a:b", "k", states=0b1010, limit=5),
        ),
        (req("GET", "/a:b", "state="), Route(RouteKind.LIST, "a:b", limit=100)),
        (req("OPTIONS", "/a:b/s", origin="http://page"), Route(RouteKind.PREFLIGHT)),
        (req("GET", "/", upgrade="WebSocket"), Route(RouteKind.WEBSOCKET)),
    ],
)
def test_routes(request_: HttpRequest, expected: Route) -> None:
    assert route(request_, OPTIONS) == expected


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (req("GET", "/"), 404, ErrorCode.UNKNOWN_CHANNEL),
        (req("GET", "/Bad/s"), 400, ErrorCode.INVALID_NAME),
        (req("GET", "/a:b/s s"), 400, ErrorCode.INVALID_NAME),
        (req("POST", "/a:b/s s/upload"), 400, ErrorCode.INVALID_NAME),
        (req("GET", "/a:b/s", last_event_id="x"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b/s", last_event_id=str(1 << 64)), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b/s", "after_seq=1.5"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("PUT", "/a:b/s"), 405, ErrorCode.NOT_ALLOWED),
        (req("PUT", "/a:b"), 405, ErrorCode.NOT_ALLOWED),
        (req("GET", "/a:b/s/upload"), 405, ErrorCode.NOT_ALLOWED),
        (req("POST", "/a:b/s/status"), 405, ErrorCode.NOT_ALLOWED),
        (req("GET", "/a:b/s s/status"), 400, ErrorCode.INVALID_NAME),
        (req("DELETE", "/a:b/s s"), 400, ErrorCode.INVALID_NAME),
        (req("DELETE", "/a:b"), 405, ErrorCode.NOT_ALLOWED),
        (req("GET", "/a:b", "state=missing"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b", "state=opened"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b", "after=s%20s"), 400, ErrorCode.INVALID_NAME),
        (req("GET", "/a:b", "limit=0"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b", "limit=1001"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b", "limit=x"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b", "limit=" + "1" * 5000), 400, ErrorCode.INVALID_ARGUMENT),
        (req("GET", "/a:b/s", "after_seq=" + "1" * 5000), 400, ErrorCode.INVALID_ARGUMENT),
        (req("POST", "/a:b", "stream_id=s%20s"), 400, ErrorCode.INVALID_NAME),
        (req("POST", "/a:b", "stream_id=q&join=yes"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("POST", "/a:b", "join=1"), 400, ErrorCode.INVALID_ARGUMENT),
        (req("POST", "/a:b/s/other"), 404, ErrorCode.UNKNOWN_STREAM),
        (req("GET", "/a:b/s/x/y"), 404, ErrorCode.UNKNOWN_STREAM),
        (req("GET", "/a:b/s", origin="http://evil", host="h"), 403, ErrorCode.FORBIDDEN),
        (req("GET", "/", upgrade="websocket", origin="http://evil"), 0, 0),
    ],
)
def test_refusals(request_: HttpRequest, status: int, code: int) -> None:
    decision = route(request_, OPTIONS)
    if status == 0:  # a WebSocket upgrade is judged by the WebSocket layer, not here
        assert decision.kind is RouteKind.WEBSOCKET
        return
    assert (decision.kind, decision.status, decision.code) == (RouteKind.REFUSE, status, code)
    assert bool(decision.allow) == (status == 405)


def test_the_allow_header_lists_the_methods_of_the_shape() -> None:
    assert route(req("PUT", "/a:b"), OPTIONS).allow == "GET, POST, OPTIONS"
    assert route(req("PUT", "/a:b/s"), OPTIONS).allow == "GET, DELETE, OPTIONS"
    assert route(req("GET", "/a:b/s/upload"), OPTIONS).allow == "POST, OPTIONS"
    assert route(req("PUT", "/a:b/s/status"), OPTIONS).allow == "GET, OPTIONS"


def test_same_origin_and_any_origin() -> None:
    same = req("GET", "/a:b/s", origin="http://h:1", host="h:1")
    assert route(same, OPTIONS).kind is RouteKind.SUBSCRIBE
    anyone = HttpOptions(allow_origins=("*",))
    assert route(req("GET", "/a:b/s", origin="http://x"), anyone).kind is RouteKind.SUBSCRIBE
    assert cors_headers("http://x", anyone)[0] == ("access-control-allow-origin", "http://x")
    assert cors_headers("http://x", OPTIONS) == ()


def test_preflight_headers() -> None:
    asked = req("OPTIONS", "/a:b", origin="http://page", access_control_request_headers="x-a")
    headers = dict(preflight_headers(asked, OPTIONS))
    assert headers["access-control-allow-headers"] == "x-a"
    assert headers["access-control-allow-origin"] == "http://page"
    plain = dict(preflight_headers(req("OPTIONS", "/a:b", origin="http://page"), OPTIONS))
    assert "Last-Event-ID" in plain["access-control-allow-headers"]


def test_statuses() -> None:
    assert status_for(ErrorCode.UNKNOWN_STREAM) == 404
    assert status_for(ErrorCode.SERVER_SHUTDOWN) == 503
    assert status_for(1234) == 403
    assert status_for(ErrorCode.INTERNAL_ERROR) == 500


def test_default_auth_is_the_authorization_header() -> None:
    assert default_auth(req("GET", "/", authorization="Bearer t")) == b"Bearer t"
    assert default_auth(req("GET", "/")) == b""


def test_the_state_table() -> None:
    assert TRANSITIONS[ExchangeState.PENDING, Input.RESPOND] is ExchangeState.STREAMING
    assert (ExchangeState.DONE, Input.RESPOND) not in TRANSITIONS
    hub = make_hub()
    hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"))
    assert ex.state is ExchangeState.STREAMING
    with pytest.raises(LocalProtocolError) as info:
        ex._move(Input.RESPOND)
    assert info.value.code == ErrorCode.INVALID_STATE


def test_an_exchange_serves_only_hub_requests() -> None:
    with pytest.raises(LocalProtocolError):
        HttpExchange(
            make_hub(),
            req("OPTIONS", "/"),
            Route(RouteKind.PREFLIGHT),
            Config(),
            OPTIONS,
            clock=Clock(),
        )


# -- subscribe --------------------------------------------------------------------------------


def test_subscribe_live_replay_and_end() -> None:
    hub = make_hub()
    producer = hub.register("a:b", ChannelOptions(replay=Window(chunks=100))).start("s")
    producer.write(b"one")
    woken: list[int] = []
    decision = route(req("GET", "/a:b/s", origin="http://page"), OPTIONS)
    ex = HttpExchange(
        hub,
        req("GET", "/a:b/s", origin="http://page"),
        decision,
        Config(),
        OPTIONS,
        clock=Clock(),
        wakeup=lambda: woken.append(1),
    )
    assert ex.head is not None
    status, headers = ex.head
    assert status == 200
    assert ("content-type", "text/event-stream") in headers
    assert ("access-control-allow-origin", "http://page") in headers
    first = ex.take_body()
    assert first.startswith(b"retry: 500\n")
    assert chunks_of(first) == [b"one"]
    assert ex.take_body() == b""
    producer.write(b"\xfftwo")
    producer.close()
    assert woken
    rest = ex.take_body()
    assert chunks_of(rest) == [b"\xfftwo"]
    assert events(rest)[-1][0] == "end"
    assert ex.done
    assert ex.keep_alive


def test_resume_at_the_end_of_an_ended_stream_is_204() -> None:
    hub = make_hub()
    producer = hub.register("a:b").start("s")
    producer.write(b"x")
    producer.close()
    ex = exchange(hub, req("GET", "/a:b/s", last_event_id="1:end"))
    assert ex.head == (204, ())
    assert ex.done
    assert ex.take_body() == b""
    # The last chunk's id, not the end's: cut between the two, the end comes again.
    cut = exchange(hub, req("GET", "/a:b/s", last_event_id="1"))
    assert status(cut) == 200
    assert cut.take_body().endswith(b'id: 1:end\nevent: end\ndata: {"last_seq": 1}\n\n')
    for bogus in ("1:ended", ":end", "x:end", "1:end:end"):
        refused = route(req("GET", "/a:b/s", last_event_id=bogus), OPTIONS)
        assert (refused.kind, refused.status) == (RouteKind.REFUSE, 400), bogus
    # From the start: the chunk, then the end, with a 200.
    again = exchange(hub, req("GET", "/a:b/s"))
    assert status(again) == 200
    body = again.take_body()
    assert chunks_of(body) == [b"x"]
    assert events(body)[-1][0] == "end"


def test_a_failed_stream_replays_its_error_even_at_its_end() -> None:
    hub = make_hub()
    producer = hub.register("a:b").start("s")
    producer.write(b"x")
    producer.fail(1500, "nope")
    ex = exchange(hub, req("GET", "/a:b/s", last_event_id="1"))
    assert status(ex) == 200
    kind, data, _ = events(ex.take_body())[-1]
    assert kind == "error"
    assert json.loads(data)["code"] == 1500
    assert ex.done


def test_evicted_history_is_a_gap_event() -> None:
    hub = make_hub()
    producer = hub.register("a:b", ChannelOptions(replay=Window(chunks=2))).start("s")
    for i in range(5):
        producer.write(b"%d" % i)
    ex = exchange(hub, req("GET", "/a:b/s", "after_seq=0"))
    got = events(ex.take_body())
    assert got[0][0] == "gap"
    assert json.loads(got[0][1]) == {"first": 1, "last": 3, "reason": "evicted"}
    assert got[0][2] == "3"
    assert [e[1] for e in got[1:]] == ["3", "4"]


def test_unknown_stream_is_404_json() -> None:
    hub = make_hub()
    hub.register("a:b")
    ex = exchange(hub, req("GET", "/a:b/nope"))
    assert ex.head is not None
    assert ex.head[0] == 404
    assert json.loads(ex.take_body())["name"] == "UNKNOWN_STREAM"
    assert ex.done


def test_a_client_that_never_reads_is_bounded_by_its_window_and_policy() -> None:
    hub = make_hub()
    options = ChannelOptions(default_policy=OverflowPolicy.DROP_OLDEST)
    producer = hub.register("a:b", options).start("s")
    config = Config(window_chunks=16, max_queued_chunks=16)
    ex = exchange(hub, req("GET", "/a:b/s"), config=config)
    for i in range(10_000):
        producer.write(b"%d" % i)
    assert ex.buffered < 4096
    got = events(ex.take_body())
    assert any(kind == "gap" for kind, _, _ in got)  # told exactly what it lost


def test_heartbeats_follow_the_keepalive_clock() -> None:
    clock = Clock()
    hub = make_hub(clock=clock)
    hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"), config=Config(keepalive=5), clock=clock)
    ex.take_body()
    assert ex.next_deadline() == 5
    clock.now = 4
    ex.handle_timer()
    assert ex.take_body() == b""
    clock.now = 5
    ex.handle_timer()
    assert ex.take_body() == b": ping\n"
    ex.receive_body(b"a GET's body is ignored")
    ex.end_body()
    assert not ex.wants_body
    assert ex.next_deadline() == 10
    ex.disconnected()
    assert ex.done
    assert ex.next_deadline() is None
    ex.handle_timer()
    assert ex.take_body() == b""


def test_disconnect_and_shutdown() -> None:
    hub = make_hub()
    hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"))
    ex.shutdown()  # NO_ERROR: the stream runs on
    assert not ex.done
    assert not ex.keep_alive
    ex.shutdown(ErrorCode.SERVER_SHUTDOWN)  # already said: nothing more
    cut = exchange(hub, req("GET", "/a:b/s"))
    cut.shutdown(ErrorCode.SERVER_SHUTDOWN)
    assert cut.done
    assert b"event: end" not in cut.take_body()  # cut, so an EventSource reconnects
    ex.disconnected()
    ex.disconnected()
    assert hub.statistics().subscriptions == 0


# -- open -------------------------------------------------------------------------------------


def _opening_hub() -> Hub:
    hub = make_hub()

    def on_open(producer: object, args: bytes) -> None:
        producer.write(b"echo:" + args)  # type: ignore[attr-defined]
        producer.close()  # type: ignore[attr-defined]

    hub.register("a:b", on_open=on_open)
    hub.register("a:plain")
    return hub


def test_post_opens_with_the_body_as_args() -> None:
    hub = _opening_hub()
    ex = exchange(hub, req("POST", "/a:b", origin="http://page"))
    assert ex.head is None
    assert ex.wants_body
    ex.receive_body(b"")
    ex.receive_body(b"hel")
    ex.receive_body(b"lo")
    ex.end_body()
    ex.end_body()
    assert ex.head is not None
    headers = dict(ex.head[1])
    assert headers["stream-id"].startswith("id")
    assert "Stream-Id" in headers["access-control-expose-headers"]
    assert chunks_of(ex.take_body()) == [b"echo:hello"]
    assert ex.done
    assert not ex.wants_body
    ex.receive_body(b"late")  # ignored


def test_post_refusals() -> None:
    hub = _opening_hub()
    ex = exchange(hub, req("POST", "/a:plain"))
    ex.end_body()
    assert status(ex) == 403
    too_big = exchange(hub, req("POST", "/a:b", content_length=str(1 << 20)))
    assert status(too_big) == 413
    assert not too_big.keep_alive
    streamed = exchange(hub, req("POST", "/a:b"))
    streamed.receive_body(b"x" * (OPTIONS.max_body + 1))
    assert status(streamed) == 413
    stopped = exchange(hub, req("POST", "/a:b"))
    stopped.shutdown(ErrorCode.SERVER_SHUTDOWN)
    assert status(stopped) == 503
    draining = exchange(hub, req("POST", "/a:b"))
    draining.shutdown()  # NO_ERROR: the body may finish, but no stream opens any more
    draining.end_body()
    assert status(draining) == 503
    draining.shutdown()  # over: nothing more


def test_a_channel_of_bidirectional_streams_only_is_not_opened_over_http() -> None:
    # R-HTTP-34: a POST opens without the BIDI flag, so the bidi handler never runs.
    hub = make_hub()
    calls: list[bytes] = []
    hub.register("a:chat", on_bidi=lambda producer, reader, args: calls.append(args))
    ex = exchange(hub, req("POST", "/a:chat"))
    ex.receive_body(b"hello")
    ex.end_body()
    assert status(ex) == 403
    body = json.loads(ex.take_body())
    assert (body["code"], body["name"]) == (ErrorCode.NOT_ALLOWED, "NOT_ALLOWED")
    assert "bidirectional" not in body["message"]
    assert calls == []


def _posted(hub: Hub, query: str, body: bytes = b"") -> HttpExchange:
    ex = exchange(hub, req("POST", "/a:run", query))
    ex.receive_body(body)
    ex.end_body()
    return ex


def test_post_runs_or_joins_a_named_stream() -> None:
    hub = make_hub()
    calls: list[bytes] = []

    def on_open(producer: object, args: bytes) -> None:
        calls.append(args)
        producer.write(b"first")  # type: ignore[attr-defined]

    hub.register("a:run", on_open=on_open)
    ran = _posted(hub, "stream_id=q&join=1", b"run")
    assert ran.head is not None
    assert (ran.head[0], dict(ran.head[1])["stream-id"]) == (200, "q")
    assert dict(ran.head[1])["stream-joined"] == "false"
    joined = _posted(hub, "stream_id=q&join=1", b"ignored")
    assert joined.head is not None
    headers = dict(joined.head[1])
    assert (joined.head[0], headers["stream-id"], headers["stream-joined"]) == (200, "q", "true")
    assert calls == [b"run"]  # one producer for both requesters
    assert chunks_of(joined.take_body()) == [b"first"]  # joined from seq 1
    assert chunks_of(ran.take_body()) == [b"first"]
    refused = _posted(hub, "stream_id=q")
    assert status(refused) == 409
    assert json.loads(refused.take_body())["name"] == "STREAM_EXISTS"
    fresh = _posted(hub, "stream_id=other&join=1")
    assert fresh.head is not None
    assert dict(fresh.head[1])["stream-joined"] == "false"
    assert calls == [b"run", b""]


def test_authentication_from_the_authorization_header() -> None:
    seen: list[object] = []

    def authenticate(auth: bytes) -> object:
        return Refuse(ErrorCode.AUTH_FAILED, "who?") if auth == b"bad" else auth.decode()

    def authorize(request: object) -> object:
        seen.append(request.principal)  # type: ignore[attr-defined]
        return True

    hub = make_hub(authenticate=authenticate, authorize=authorize)
    hub.register("a:b").start("s")
    ok = exchange(hub, req("GET", "/a:b/s", authorization="Bearer t"))
    assert status(ok) == 200
    assert seen == ["Bearer t"]
    refused = exchange(hub, req("GET", "/a:b/s", authorization="bad"))
    assert status(refused) == 401
    assert json.loads(refused.take_body())["name"] == "AUTH_FAILED"


# -- status and listing -----------------------------------------------------------------------


def _answer(ex: HttpExchange) -> tuple[int | None, object]:
    assert ex.done
    return status(ex), json.loads(ex.take_body())


def _status_hub(**kwargs: object) -> Hub:
    hub = make_hub(**kwargs)
    channel = hub.register("a:b", ChannelOptions(replay=Window(chunks=2)))
    live = channel.start("live")
    for data in (b"1", b"2", b"3"):
        live.write(data)
    channel.start("done").close()
    channel.start("bad").fail(1234, "broken")
    return hub


def test_status_answers_each_state_as_json() -> None:
    hub = _status_hub()
    ex = exchange(hub, req("GET", "/a:b/live/status", origin="http://page"))
    assert ex.head is not None
    assert ("content-type", "application/json") in ex.head[1]
    assert ("access-control-allow-origin", "http://page") in ex.head[1]
    assert _answer(ex) == (
        200,
        {"stream_id": "live", "state": "open", "code": 0, "first_seq": 2, "last_seq": 3},
    )
    assert ex.take_body() == b""
    for sid, state, code in (("done", "ended", 0), ("bad", "failed", 1234), ("x", "missing", 0)):
        got = _answer(exchange(hub, req("GET", f"/a:b/{sid}/status")))
        assert got[0] == 200
        assert (got[1]["state"], got[1]["code"]) == (state, code)  # type: ignore[index]
    assert hub.statistics().subscriptions == 0  # asked without subscribing


def test_status_and_listing_are_authorized_and_concealed() -> None:
    asked: list[tuple[str, str, str]] = []

    def authorize(request: object) -> object:
        kind, sid = request.kind.value, request.stream_id  # type: ignore[attr-defined]
        asked.append((kind, request.channel, sid))  # type: ignore[attr-defined]
        return sid != "bad" and sid != "z"

    hub = _status_hub(authorize=authorize)
    hub.register("a:hidden", ChannelOptions(conceal=True)).start("bad")
    assert _answer(exchange(hub, req("GET", "/a:b/live/status")))[0] == 200
    refused = _answer(exchange(hub, req("GET", "/a:b/bad/status")))
    assert refused[0] == 403
    assert refused[1]["code"] == ErrorCode.FORBIDDEN  # type: ignore[index]
    concealed = _answer(exchange(hub, req("GET", "/a:hidden/bad/status")))
    unknown = _answer(exchange(hub, req("GET", "/a:nope/bad/status")))
    # The same answer as an unknown channel's, naming the channel asked for.
    assert concealed == (unknown[0], {**unknown[1], "message": "no channel 'a:hidden'"})  # type: ignore[dict-item]
    assert concealed[0] == 404
    assert _answer(exchange(hub, req("GET", "/a:b", "after=z")))[0] == 403
    assert ("status", "a:b", "live") in asked
    assert ("list", "a:b", "z") in asked


def test_delete_answers_the_stream_as_it_was_and_ends_its_readers() -> None:
    asked: list[tuple[str, str]] = []

    def authorize(request: object) -> object:
        asked.append((request.kind.value, request.stream_id))  # type: ignore[attr-defined]
        return request.stream_id != "bad"  # type: ignore[attr-defined]

    hub = make_hub(authorize=authorize)
    channel = hub.register("a:b", ChannelOptions(allow_delete=True))
    channel.start("live").write(b"1")
    channel.start("bad")
    hub.register("a:kept").start("s")
    reader = exchange(hub, req("GET", "/a:b/live"))
    assert b"data: 1" in reader.take_body()
    gone = _answer(exchange(hub, req("DELETE", "/a:b/live")))
    assert gone == (
        200,
        {"stream_id": "live", "state": "open", "code": 0, "first_seq": 1, "last_seq": 1},
    )
    assert ("delete", "live") in asked
    text = reader.take_body()
    assert b"event: error" in text  # its reader ends (R-QUERY-4)
    assert b"STREAM_DELETED" in text
    assert reader.complete
    after = _answer(exchange(hub, req("GET", "/a:b/live/status")))
    assert after[1]["state"] == "missing"  # type: ignore[index]
    nothing = _answer(exchange(hub, req("DELETE", "/a:b/live")))
    assert nothing[1]["state"] == "missing"  # type: ignore[index]
    refused = _answer(exchange(hub, req("DELETE", "/a:b/bad")))
    assert (refused[0], refused[1]["code"]) == (403, ErrorCode.FORBIDDEN)  # type: ignore[index]
    not_allowed = _answer(exchange(hub, req("DELETE", "/a:kept/s")))
    assert (not_allowed[0], not_allowed[1]["code"]) == (403, ErrorCode.NOT_ALLOWED)  # type: ignore[index]
    assert _answer(exchange(hub, req("GET", "/a:kept/s/status")))[1]["state"] == "open"  # type: ignore[index]


def test_listing_pages_filters_and_cursor() -> None:
    hub = _status_hub()
    page = _answer(exchange(hub, req("GET", "/a:b", "limit=2")))
    assert page[0] == 200
    body = page[1]
    assert [e["stream_id"] for e in body["streams"]] == ["bad", "done"]  # type: ignore[index]
    assert body["next"] == "done"  # type: ignore[index]
    rest = _answer(exchange(hub, req("GET", "/a:b", "limit=2&after=done")))[1]
    assert rest == {
        "streams": [
            {"stream_id": "live", "state": "open", "code": 0, "first_seq": 2, "last_seq": 3}
        ],
        "next": "",
    }
    closed = _answer(exchange(hub, req("GET", "/a:b", "state=ended,failed")))[1]
    assert [e["state"] for e in closed["streams"]] == ["failed", "ended"]  # type: ignore[index]
    unknown = exchange(hub, req("GET", "/a:nope"))
    assert status(unknown) == 404


# -- upload -----------------------------------------------------------------------------------


def _upload_hub() -> tuple[Hub, list[UploadReader]]:
    hub = make_hub()
    readers: list[UploadReader] = []
    hub.register("a:b", on_upload=readers.append)
    return hub, readers


def _drain(reader: UploadReader) -> bytes:
    out = b""
    while (chunk := reader.read_nowait()) is not None:
        out += chunk
    return out


def test_upload_reads_no_faster_than_the_credit() -> None:
    hub, readers = _upload_hub()
    config = Config(window_chunks=4, max_queued_chunks=4, max_chunk_size=1024)
    ex = exchange(hub, req("POST", "/a:b/u/upload", "args=x"), config=config)
    (reader,) = readers
    assert reader.args == b"x"
    assert ex.wants_body
    ex.receive_body(b"a" * 3000)  # three chunks of at most the peer's chunk size
    fed = 0
    while ex.wants_body:
        ex.receive_body(b"b" * 100)
        fed += 1
    assert fed < 10  # a window and a queue, no more
    got = _drain(reader)
    ex.pump()
    assert ex.wants_body  # reading returned credit
    ex.receive_body(b"c")
    ex.end_body()
    assert ex.head is None or ex.done
    got += _drain(reader)
    ex.pump()
    got += _drain(reader)
    assert got == b"a" * 3000 + b"b" * 100 * fed + b"c"
    assert status(ex) == 200
    assert json.loads(ex.take_body())["bytes"] == len(got)
    assert reader.outcome == (0, "")


def test_upload_cancel_answers_at_once() -> None:
    hub, readers = _upload_hub()
    ex = exchange(hub, req("POST", "/a:b/u/upload"))
    ex.receive_body(b"x" * 100)
    readers[0].cancel(1007, "enough")
    ex.pump()
    assert status(ex) == 409
    assert json.loads(ex.take_body())["code"] == 1007
    assert not ex.keep_alive
    other = exchange(hub, req("POST", "/a:b/v/upload"))
    readers[1].cancel()
    other.pump()
    assert status(other) == 409
    assert json.loads(other.take_body())["name"] == "UPLOAD_CANCELLED"


def test_upload_to_a_channel_without_uploads_is_refused() -> None:
    hub = make_hub()
    hub.register("a:b")
    ex = exchange(hub, req("POST", "/a:b/u/upload"))
    assert status(ex) == 403
    assert not ex.wants_body


def test_no_heartbeats_without_keepalive() -> None:
    hub = make_hub()
    hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"), config=Config(keepalive=0))
    ex.take_body()
    assert ex.next_deadline() is None


def test_upload_pieces_wait_for_credit() -> None:
    hub, readers = _upload_hub()
    config = Config(window_chunks=2, max_queued_chunks=2, max_chunk_size=1024)
    ex = exchange(hub, req("POST", "/a:b/u/upload"), config=config)
    ex.receive_body(b"p" * 10 * 1024)  # ten chunks: more than window and queue
    assert not ex.wants_body
    ex.end_body()
    got = b""
    for _ in range(100):
        got += _drain(readers[0])
        ex.pump()
        if ex.done:
            break
    got += _drain(readers[0])  # the last chunks reached the reader as the answer was made
    assert got == b"p" * 10 * 1024
    assert status(ex) == 200
    assert json.loads(ex.take_body())["chunks"] == 10


def test_an_uploader_that_goes_away_fails_the_reader() -> None:
    hub, readers = _upload_hub()
    ex = exchange(hub, req("POST", "/a:b/u/upload"))
    ex.receive_body(b"x")
    ex.disconnected()
    assert readers[0].read_nowait() == b"x"
    assert readers[0].outcome is not None
    assert readers[0].outcome[0] == ErrorCode.UPLOAD_DISCONNECTED


def test_a_wakeup_that_flushes_inline_does_not_reenter() -> None:
    # The thread backend flushes inside its wakeup, which the hub calls while the pair moves.
    hub = make_hub()
    producer = hub.register("a:b", ChannelOptions(replay=Window(chunks=10))).start("s")
    producer.write(b"x")
    taken: list[bytes] = []
    holder: list[HttpExchange] = []

    def wakeup() -> None:
        if holder:
            taken.append(holder[0].take_body())

    request = req("GET", "/a:b/s", "after_seq=0")
    ex = HttpExchange(
        hub, request, route(request, OPTIONS), Config(), OPTIONS, clock=Clock(), wakeup=wakeup
    )
    holder.append(ex)
    producer.write(b"y")
    producer.close()
    taken.append(ex.take_body())
    assert chunks_of(b"".join(taken)) == [b"x", b"y"]


def test_shutdown_lets_an_event_stream_run_to_its_end() -> None:
    hub = make_hub()
    producer = hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"))
    ex.shutdown()
    producer.write(b"last")
    producer.close()  # the end, then the pair's goodbye in the same batch
    body = ex.take_body()
    assert chunks_of(body) == [b"last"]
    assert events(body)[-1][0] == "end"
    assert ex.done


def test_a_hub_shutdown_ends_exchanges_as_the_servers_own_shutdown_does() -> None:
    hub = _opening_hub()
    producer = hub.channel("a:plain").start("s")
    drained = exchange(hub, req("GET", "/a:plain/s"))
    cut = exchange(hub, req("GET", "/a:plain/s"))
    opening = exchange(hub, req("POST", "/a:b"))
    opening.receive_body(b"xy")  # and more to come
    hub.shutdown()  # NO_ERROR: GOAWAY to every attached connection, exchanges' pairs too
    for ex in (drained, cut, opening):
        ex.pump()  # what the adapter does when woken
        assert not ex.done
        assert not ex.keep_alive  # the HTTP connection closes after this response
    producer.write(b"last")
    producer.close()
    drained.pump()
    assert chunks_of(drained.take_body()) == [b"last"]
    assert drained.done
    opening.end_body()  # the request was never sent: 503, as after server.shutdown()
    assert status(opening) == 503
    assert json.loads(opening.take_body())["code"] == ErrorCode.SERVER_SHUTDOWN
    hub.shutdown(ErrorCode.SERVER_SHUTDOWN)  # forced: what is left ends now
    cut.pump()
    assert cut.done
    assert b"event: end" not in cut.take_body()  # cut, so an EventSource reconnects
    assert hub.peer_count == 0
    late = exchange(hub, req("GET", "/a:plain/s"))
    assert status(late) == 503
    assert not late.keep_alive


@pytest.mark.parametrize("state", list(ExchangeState))
@pytest.mark.parametrize("what", list(Input))
def test_every_state_and_input_pair(state: ExchangeState, what: Input) -> None:
    hub = make_hub()
    hub.register("a:b").start("s")
    ex = exchange(hub, req("GET", "/a:b/s"))
    ex.state = state
    if (state, what) in TRANSITIONS:
        ex._move(what)
        assert ex.state is TRANSITIONS[state, what]
    else:
        with pytest.raises(LocalProtocolError) as info:
            ex._move(what)
        assert info.value.code == ErrorCode.INVALID_STATE
        assert ex.state is state
