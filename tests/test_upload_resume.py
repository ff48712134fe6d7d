"""Resumable uploads, acknowledgement and results (spec section 9.1, R-UPR-*): the core's
frames and states, and the hub parking an upload in its session and handing it over on resume.
"""

from __future__ import annotations

import attrs
import pytest
from hub_helpers import Client, HubHarness
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproto import (
    Config,
    Connection,
    ErrorCode,
    Feature,
    HState,
    LocalProtocolError,
    RequestAccepted,
    RequestRejected,
    Role,
    Setting,
    UploadCancelled,
    UploadCompleted,
    UploadEnded,
    UploadReader,
    UploadRequested,
    UploadResumePoint,
    WriteResult,
)
from streamproto._frames import (
    Accept,
    Credit,
    Data,
    End,
    Hello,
    Upload,
    UploadAck,
    UploadResult,
    Welcome,
    encode,
)
from streamproto.testing import decode_frames, expect_goaway, expect_terminated

CH = "files:in"
BOTH = Feature.QUERIES | Feature.UPLOAD_RESUME
#: A server whose reader returns credit as it reads (what the adapters run), small windows.
SERVER = Config(window_chunks=4, auto_credit=False, session_grace=5.0)


class Uploads:
    """An upload handler that keeps the readers (and sets a result when told to)."""

    def __init__(self) -> None:
        self.readers: list[UploadReader] = []

    def __call__(self, reader: UploadReader) -> None:
        self.readers.append(reader)


def read_all(reader: UploadReader) -> list[bytes]:
    out: list[bytes] = []
    while (chunk := reader.read_nowait()) is not None:
        out.append(chunk)
    return out


def harness() -> tuple[HubHarness, Uploads]:
    h = HubHarness()
    uploads = Uploads()
    h.hub.register(CH, on_upload=uploads)
    return h, uploads


def reconnect(h: HubHarness, old: Client) -> Client:
    """The client comes back on a new connection with its resume token."""
    if not old.gone:
        old.disconnect()
    new = h.connect(server_config=SERVER, resume_token=old.handshake.resume_token)
    assert new.handshake.resumed
    return new


def ended_upload(h: HubHarness) -> tuple[Client, int]:
    """A client whose resumable upload with a result ``f1`` ended, its result not given."""
    old = h.connect(server_config=SERVER)
    u = old.conn.upload(CH, "f1", resumable=True, result=True)
    h.pump()
    old.conn.send_end(u)
    h.pump()
    return old, u


def client_welcome(features: int) -> Connection:
    c = Connection(Role.CLIENT)
    c.data_to_send()
    c.receive_data(encode(Welcome(settings=((Setting.FEATURES, features),), session_id="s")))
    return c


def server_hello(features: Feature, config: Config | None = None) -> Connection:
    s = Connection(Role.SERVER, config)
    s.receive_data(encode(Hello()))
    s.accept_handshake(session_id="s", resume_token="t", features=features)
    s.data_to_send()
    return s


# -- acknowledgement and result ------------------------------------------------------------------


def test_the_hub_announces_resumable_uploads() -> None:
    h, _ = harness()
    c = h.connect()
    assert c.conn.peer_features == BOTH | Feature.BIDI  # (and bidirectional streams)


def test_reading_acknowledges_what_the_server_took() -> None:
    """R-UPR-3: UPLOAD_ACK goes with the CREDIT that reading returns; the client forgets
    what is acknowledged, so it keeps at most a window and its queue."""
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", resumable=True)
    for i in range(4):
        assert c.conn.send_data(u, b"c%d" % i) is WriteResult.ACCEPTED
    h.pump()
    point = c.conn.upload_resume_point(u)
    assert point is not None
    assert (point.first_seq, point.chunks, point.ended) == (1, (b"c0", b"c1", b"c2", b"c3"), False)
    (reader,) = uploads.readers
    assert reader.resumable
    assert not reader.wants_result
    assert read_all(reader)[:2] == [b"c0", b"c1"]  # half the window: CREDIT, with the ACK
    h.pump()
    point = c.conn.upload_resume_point(u)
    assert point is not None
    assert (point.first_seq, point.chunks) == (5, ())  # all 4 received: acknowledged
    assert point.next_seq == 5


def test_a_resumable_upload_ends_with_an_empty_result() -> None:
    """R-UPR-7: without RESULT, the server answers the whole upload with an empty
    UPLOAD_RESULT at once; the client's handle closes on it, not when its data is out."""
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", resumable=True)
    h.pump()
    c.conn.send_data(u, b"a")
    c.conn.send_end(u)
    h.pump()
    assert c.of(u)[-1] == UploadCompleted(u, b"")
    assert c.conn.handle_state(u) is HState.CLOSED
    (reader,) = uploads.readers
    assert read_all(reader) == [b"a"]
    assert reader.outcome == (0, "")
    assert h.hub.statistics().uploads == 0


def test_a_result_upload_returns_the_handlers_result() -> None:
    """R-UPR-7: with RESULT the upload closes with the result the application sets after the
    end; UPLOAD_CANCEL can still come until then (R-UPR-8)."""
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", result=True)
    h.pump()
    c.conn.send_data(u, b"12")
    c.conn.send_data(u, b"30")
    c.conn.send_end(u)
    h.pump()
    (reader,) = uploads.readers
    assert reader.wants_result
    assert not reader.resumable
    assert reader.outcome == (0, "")
    assert c.conn.handle_state(u) is HState.FINISHING
    assert h.hub.statistics().uploads == 1  # the id is held until the result
    total = sum(int(x) for x in read_all(reader))
    reader.set_result(b"%d" % total)
    h.pump()
    assert c.of(u)[-1] == UploadCompleted(u, b"42")
    assert h.hub.statistics().uploads == 0
    with pytest.raises(LocalProtocolError) as info:
        reader.set_result(b"again")
    assert info.value.code == ErrorCode.INVALID_STATE


def test_a_result_set_before_the_end_is_sent_at_the_end() -> None:
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", result=True)
    h.pump()
    (reader,) = uploads.readers
    reader.set_result(b"early")
    c.conn.send_end(u)
    h.pump()
    assert c.of(u)[-1] == UploadCompleted(u, b"early")


def test_cancel_while_the_result_is_due() -> None:
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", result=True)
    h.pump()
    c.conn.send_end(u)
    h.pump()
    (reader,) = uploads.readers
    reader.cancel(1001, "bad file")
    h.pump()
    assert c.of(u)[-1] == UploadCancelled(u, 1001, "bad file")
    assert reader.outcome == (1001, "bad file")
    reader.cancel()  # over: a no-op
    assert h.hub.statistics().uploads == 0


def test_result_errors() -> None:
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    c.conn.upload(CH, "f1")
    c.conn.upload(CH, "f2", result=True)
    h.pump()
    plain, wants = uploads.readers
    with pytest.raises(LocalProtocolError) as info:
        plain.set_result(b"x")
    assert info.value.code == ErrorCode.INVALID_STATE
    with pytest.raises(LocalProtocolError) as info:
        wants.set_result(b"x" * 16385)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT


# -- resume ---------------------------------------------------------------------------------------


def test_resume_continues_from_the_next_seq_the_server_expects() -> None:
    """R-UPR-4, R-UPR-5: after a disconnect the reader waits; the resumed upload continues
    from the server's next seq: nothing lost, nothing repeated."""
    h, uploads = harness()
    old = h.connect(server_config=SERVER)
    u = old.conn.upload(CH, "f1", b"meta", resumable=True)
    for i in range(6):
        old.conn.send_data(u, b"c%d" % i)  # 4 fit the window, 2 stay queued
    h.pump()
    (reader,) = uploads.readers
    assert reader.read_nowait() == b"c0"
    old.disconnect()
    assert reader.outcome is None  # parked, not failed
    assert not reader.attached
    assert h.hub.statistics().uploads == 1
    point = old.conn.upload_resume_point(u)
    assert isinstance(point, UploadResumePoint)
    assert point.first_seq == 1  # nothing acknowledged yet
    assert point.next_seq == 7
    new = reconnect(h, old)
    u2 = new.conn.resume_upload(point)
    new.conn.send_data(u2, b"c6")
    h.pump()
    new.conn.send_end(u2)
    h.pump()
    requested = [e for e in new.server_events if isinstance(e, UploadRequested)]
    assert requested == [UploadRequested(u2, CH, "f1", b"meta", True, False, True)]
    accepted = [e for e in new.of(u2) if isinstance(e, RequestAccepted)]
    assert (accepted[0].first_seq, accepted[0].last_seq) == (5, 4)  # it had 1..4
    rest = read_all(reader)
    h.pump()
    rest += read_all(reader)
    assert rest == [b"c%d" % i for i in range(1, 7)]
    assert reader.outcome == (0, "")
    assert new.of(u2)[-1] == UploadCompleted(u2, b"")


def test_resume_after_the_end_gets_the_result() -> None:
    """The END went out, the result had not come: the resume ends again and the result
    comes on the new connection, set while the uploader was away."""
    h, uploads = harness()
    old = h.connect(server_config=SERVER)
    u = old.conn.upload(CH, "f1", resumable=True, result=True)
    h.pump()
    old.conn.send_data(u, b"x")
    old.conn.send_end(u)
    h.pump()
    (reader,) = uploads.readers
    assert reader.outcome == (0, "")
    point = old.conn.upload_resume_point(u)
    old.disconnect()
    assert point is not None
    assert point.ended
    assert old.conn.upload_resume_point(u) == point  # kept when the connection ended
    reader.set_result(b"sum=1")  # the uploader is away: kept for its resume
    new = reconnect(h, old)
    u2 = new.conn.resume_upload(point)
    h.pump()
    assert new.of(u2)[-1] == UploadCompleted(u2, b"sum=1")
    assert read_all(reader) == [b"x"]


def test_a_lost_result_is_sent_again() -> None:
    """R-UPR-6: the session remembers a completed resumable upload, so a resume after its
    UPLOAD_RESULT was lost with the connection gets it again."""
    h, uploads = harness()
    old, u = ended_upload(h)
    point = old.conn.upload_resume_point(u)
    (reader,) = uploads.readers
    reader.set_result(b"done")
    old.server.data_to_send()  # the UPLOAD_RESULT is lost with the connection
    old.disconnect()
    assert point is not None
    new = reconnect(h, old)
    u2 = new.conn.resume_upload(point)
    h.pump()
    assert new.of(u2)[-1] == UploadCompleted(u2, b"done")
    # Collected: kept until the session ends; a plain upload may take the id meanwhile.
    u3 = new.conn.upload(CH, "f1")
    h.pump()
    assert isinstance(new.of(u3)[-1], RequestAccepted)


def test_a_resume_of_nothing_is_rejected() -> None:
    """R-UPR-4: no parked upload of that id: REJECT UNKNOWN_UPLOAD."""
    h, _ = harness()
    c = h.connect(server_config=SERVER)
    point = UploadResumePoint(CH, "nope", b"", False, 1, (b"a",), False)
    u = c.conn.resume_upload(point)
    h.pump()
    assert c.of(u)[-1] == RequestRejected(
        u, ErrorCode.UNKNOWN_UPLOAD, "no parked upload 'nope' to resume"
    )


def test_an_upload_not_resumed_in_the_grace_period_fails() -> None:
    h, uploads = harness()
    old = h.connect(server_config=SERVER)
    u = old.conn.upload(CH, "f1", resumable=True)
    old.conn.send_data(u, b"a")
    h.pump()
    old.disconnect()
    (reader,) = uploads.readers
    h.advance(5.0)
    assert reader.outcome == (ErrorCode.UPLOAD_DISCONNECTED, "the uploader did not resume")
    assert h.hub.statistics().uploads == 0
    point = old.conn.upload_resume_point(u)
    assert point is not None
    new = h.connect(server_config=SERVER, resume_token=old.handshake.resume_token)
    assert not new.handshake.resumed  # the session is gone
    u2 = new.conn.resume_upload(point)
    h.pump()
    assert isinstance(new.of(u2)[-1], RequestRejected)


def test_unreclaimed_uploads_of_a_resumed_session_fail_after_a_grace_period() -> None:
    h, uploads = harness()
    old = h.connect(server_config=SERVER)
    old.conn.upload(CH, "f1", resumable=True)
    h.pump()
    reconnect(h, old)
    (reader,) = uploads.readers
    h.advance(5.0)
    assert reader.outcome is not None
    assert reader.outcome[0] == ErrorCode.UPLOAD_DISCONNECTED


def test_cancelling_a_parked_upload() -> None:
    h, uploads = harness()
    old = h.connect(server_config=SERVER)
    u = old.conn.upload(CH, "f1", resumable=True)
    h.pump()
    old.disconnect()
    (reader,) = uploads.readers
    reader.cancel(1002, "no longer wanted")
    assert reader.outcome == (1002, "no longer wanted")
    assert h.hub.statistics().uploads == 0
    point = old.conn.upload_resume_point(u)
    assert point is not None
    new = reconnect(h, old)
    u2 = new.conn.resume_upload(point)
    h.pump()
    assert new.of(u2)[-1].code == ErrorCode.UNKNOWN_UPLOAD  # type: ignore[union-attr]


def test_a_plain_upload_still_fails_on_disconnect() -> None:
    """R-UP-6 holds for uploads without RESUMABLE, with or without RESULT."""
    h, uploads = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1")
    w = c.conn.upload(CH, "f2", result=True)
    h.pump()
    c.conn.send_end(w)
    h.pump()
    c.disconnect()
    plain, waiting = uploads.readers
    assert plain.outcome is not None
    assert plain.outcome[0] == ErrorCode.UPLOAD_DISCONNECTED
    assert waiting.outcome == (0, "")  # it had ended; its result has no one to go to
    assert h.hub.statistics().uploads == 0
    assert c.conn.upload_resume_point(u) is None


def test_resume_point_is_none_when_there_is_nothing_to_resume() -> None:
    h, _ = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, resumable=True)  # server-picked id: unknown until ACCEPT
    assert c.conn.upload_resume_point(u) is None
    h.pump()
    point = c.conn.upload_resume_point(u)
    assert point is not None
    assert point.stream_id == "id3"
    s = c.conn.subscribe("other:ch", "s")
    assert c.conn.upload_resume_point(s) is None
    with pytest.raises(LocalProtocolError) as info:
        c.conn.upload_resume_point(99)
    assert info.value.code == ErrorCode.UNKNOWN_HANDLE


# -- the core's rules -----------------------------------------------------------------------------


def test_flags_need_the_feature() -> None:
    """R-UPR-1: a client uses none of it unless the server announced FEATURES 0x04."""
    c = client_welcome(1)
    for call in (
        lambda: c.upload(CH, "f", resumable=True),
        lambda: c.upload(CH, "f", result=True),
        lambda: c.resume_upload(UploadResumePoint(CH, "f", b"", False, 1, (), False)),
    ):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == ErrorCode.INVALID_STATE
    assert c.data_to_send() == b""


def test_a_server_that_did_not_announce_it_ignores_the_flags() -> None:
    """R-FWD-2: the flags are undefined for a server without the feature."""
    s = server_hello(Feature.QUERIES)
    [event] = s.receive_data(encode(Upload(1, CH, "f", b"", True, True, True)))
    assert event == UploadRequested(1, CH, "f", b"")
    s.accept(1, stream_id="f")
    s.receive_data(encode(End(1, 0)))
    assert s.handle_state(1) is HState.CLOSED  # no result owed


def test_a_resume_must_name_its_upload() -> None:
    s = server_hello(BOTH)
    assert s.receive_data(encode(Upload(1, CH, "", b"", True, False, True))) == []
    [reject] = decode_frames(s.data_to_send())
    assert reject.code == ErrorCode.INVALID_NAME  # type: ignore[union-attr]


def test_accept_from_a_later_seq_is_only_for_a_resume() -> None:
    s = server_hello(BOTH)
    s.receive_data(encode(Upload(1, CH, "f", b"", True)))
    for kwargs in ({"first_seq": 3}, {"held": (1, 1)}):
        with pytest.raises(LocalProtocolError) as info:
            s.accept(1, stream_id="f", **kwargs)  # type: ignore[arg-type]
        assert info.value.code == ErrorCode.INVALID_ARGUMENT


def test_a_resume_accept_counts_what_the_server_holds() -> None:
    """R-UPR-5: chunks still unread from the earlier connection count against the window."""
    s = server_hello(BOTH, Config(window_chunks=4, window_bytes=100, auto_credit=False))
    s.receive_data(encode(Upload(1, CH, "f", b"", True, False, True)))
    s.accept(1, stream_id="f", first_seq=7, held=(3, 50))
    [accept] = decode_frames(s.data_to_send())
    assert accept == Accept(1, "f", 7, 6, 1, 50)
    s.receive_data(encode(Data(1, 7, (b"z",))))
    s.consume(1, 4, 51)
    assert [type(f) for f in decode_frames(s.data_to_send())] == [UploadAck, Credit]
    # With auto credit what is held counts as consumed: the whole window is granted.
    s = server_hello(BOTH)
    s.receive_data(encode(Upload(1, CH, "f", b"", True, False, True)))
    s.accept(1, stream_id="f", first_seq=2, held=(3, 150))
    [accept] = decode_frames(s.data_to_send())
    assert (accept.credit_chunks, accept.first_seq) == (256, 2)  # type: ignore[union-attr]


def test_send_upload_result_errors() -> None:
    s = server_hello(BOTH)
    s.receive_data(encode(Upload(1, CH, "f", b"", False, True)))
    s.accept(1, stream_id="f")
    [ended] = s.receive_data(encode(End(1, 0)))
    assert ended == UploadEnded(1, 0)
    with pytest.raises(LocalProtocolError) as info:
        s.send_upload_result(1, b"x" * 65_537)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert s.send_upload_result(1, b"ok")
    assert s.send_upload_result(1, b"ok") is False  # closed


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (UploadAck(1, 2), "ack beyond what was sent"),
        (UploadAck(2, 0), "ack on an upload that is not resumable"),
    ],
)
def test_bad_acks_are_protocol_errors(frame: UploadAck, why: str) -> None:
    c = client_welcome(5)
    c.upload(CH, "f", resumable=True)
    c.upload(CH, "g")
    c.receive_data(encode(Accept(1, "f", 1, 0, 8, 1000)) + encode(Accept(2, "g", 1, 0, 8, 1000)))
    c.send_data(1, b"a")
    c.data_to_send()
    events = c.receive_data(encode(frame))
    expect_terminated(events, ErrorCode.PROTOCOL_ERROR, by_peer=False)
    expect_goaway(c.data_to_send(), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("first_seq", [1, 5])
def test_a_resume_accept_outside_what_the_client_holds(first_seq: int) -> None:
    """The server may only ask for seqs the client still holds (from its first unacknowledged
    to the next it would write)."""
    c = client_welcome(5)
    u = c.resume_upload(UploadResumePoint(CH, "f", b"", False, 2, (b"b", b"c"), False))
    c.data_to_send()
    events = c.receive_data(encode(Accept(u, "f", first_seq, first_seq - 1, 8, 1000)))
    expect_terminated(events, ErrorCode.PROTOCOL_ERROR, by_peer=False)


def test_a_resume_resends_from_the_accepts_seq_then_what_was_written_meanwhile() -> None:
    c = client_welcome(5)
    point = UploadResumePoint(CH, "f", b"m", True, 2, (b"b", b"c", b"d"), False)
    u = c.resume_upload(point)
    [request] = decode_frames(c.data_to_send())
    assert request == Upload(u, CH, "f", b"m", True, True, True)
    c.send_data(u, b"e")  # written before the ACCEPT: seq 5
    c.receive_data(encode(Accept(u, "f", 3, 2, 8, 1000)))
    sent = decode_frames(c.data_to_send())
    assert sent == [Data(u, 3, (b"c",)), Data(u, 4, (b"d",)), Data(u, 5, (b"e",))]
    resumed = c.upload_resume_point(u)
    assert resumed is not None
    assert (resumed.first_seq, resumed.chunks) == (3, (b"c", b"d", b"e"))


def test_a_resumed_ended_upload_with_nothing_to_send_waits_for_its_result() -> None:
    c = client_welcome(5)
    u = c.resume_upload(UploadResumePoint(CH, "f", b"", False, 3, (), True))
    c.data_to_send()
    c.receive_data(encode(Accept(u, "f", 3, 2, 8, 1000)))
    assert decode_frames(c.data_to_send()) == [End(u, 2)]
    assert c.handle_state(u) is HState.FINISHING
    assert c.receive_data(encode(UploadResult(u, b"r"))) == [UploadCompleted(u, b"r")]


# -- property: cut anywhere, resumed each time, every chunk once ---------------------------------


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(0, 24),
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.booleans()), max_size=40),
    result=st.booleans(),
)
def test_an_upload_cut_anywhere_delivers_every_chunk_once(
    count: int, plan: list[tuple[int, int, bool]], result: bool
) -> None:
    """R-UPR-5: however often the connection is cut, wherever the upload stands (queued,
    in flight, unacknowledged, after END), resuming each time delivers exactly the chunks
    written, in order, once, and the upload completes."""
    h, uploads = harness()
    client = h.connect(server_config=SERVER)
    handle = client.conn.upload(CH, "f", resumable=True, result=result)
    chunks = [b"%d" % i for i in range(count)]
    written = 0
    got: list[bytes] = []
    ended = False
    steps = iter(plan)
    for _ in range(200):
        writes, reads, cut = next(steps, (4, 4, False))
        for _ in range(writes):
            if written == count:
                break
            if client.conn.send_data(handle, chunks[written]) is not WriteResult.ACCEPTED:
                break
            written += 1
        if written == count and not ended and client.conn.handle_state(handle) is HState.ACTIVE:
            client.conn.send_end(handle)
            ended = True
        if cut:
            point = client.conn.upload_resume_point(handle)
            assert point is not None
            client = reconnect(h, client)
            handle = client.conn.resume_upload(point)
        client.step()
        for reader in uploads.readers:
            for _ in range(reads):
                chunk = reader.read_nowait()
                if chunk is not None:
                    got.append(chunk)
            if reader.outcome == (0, "") and reader.wants_result and reader._result is None:
                got += read_all(reader)  # all of it arrived: the result counts it
                reader.set_result(b"n=%d" % len(got))
        h.pump()
        if any(isinstance(e, UploadCompleted) for e in client.of(handle)):
            break
    (reader,) = uploads.readers
    got += read_all(reader)
    assert got == chunks
    completed = [e for e in client.of(handle) if isinstance(e, UploadCompleted)]
    assert len(completed) == 1
    assert completed[0].result == (b"n=%d" % count if result else b"")


def test_a_batch_write_is_kept_for_a_resume() -> None:
    h, _ = harness()
    c = h.connect(server_config=SERVER)
    u = c.conn.upload(CH, "f1", resumable=True)
    assert c.conn.send_data_many(u, [b"a", b"b", b"c"]) == (3, WriteResult.ACCEPTED)
    point = c.conn.upload_resume_point(u)
    assert point is not None
    assert (point.first_seq, point.chunks) == (1, (b"a", b"b", b"c"))


def _complete_uploads(h: HubHarness, config: Config, count: int) -> list[UploadResumePoint]:
    """``count`` resumable uploads completed on one connection, in order; then the connection
    is lost. Their resume points, taken before their UPLOAD_RESULTs arrived."""
    old = h.connect(server_config=config)
    handles = [old.conn.upload(CH, f"f{i}", resumable=True) for i in range(count)]
    h.pump()
    points = []
    for u in handles:
        old.conn.send_end(u)
        point = old.conn.upload_resume_point(u)
        assert point is not None
        points.append(point)
    h.pump()
    old.disconnect()
    return points


def _resume_all(h: HubHarness, config: Config, points: list[UploadResumePoint]) -> list[object]:
    """Resume each upload on a new connection of the session: each one's last event."""
    token = h.clients[0].handshake.resume_token
    new = h.connect(server_config=config, resume_token=token)
    assert new.handshake.resumed
    handles = [new.conn.resume_upload(p) for p in points]
    h.pump()
    return [new.of(u)[-1] for u in handles]


def _unknown(event: object) -> bool:
    return isinstance(event, RequestRejected) and event.code == ErrorCode.UNKNOWN_UPLOAD


def test_a_session_remembers_its_last_completed_uploads_only() -> None:
    """R-UPR-6 is bounded: by default a session keeps its last 16 completed uploads."""
    h, _ = harness()
    assert Config().max_completed_uploads == 16
    points = _complete_uploads(h, SERVER, 17)
    first, last = _resume_all(h, SERVER, [points[0], points[-1]])
    assert _unknown(first)
    assert isinstance(last, UploadCompleted)
    assert last.result == b""


def test_how_many_completed_uploads_a_session_remembers_is_a_server_option() -> None:
    """With ``max_completed_uploads=2`` the third-newest completed upload is forgotten: its
    resume is answered UNKNOWN_UPLOAD, as for an upload the server never had; the two newest
    are taken over and answered with their result again."""
    config = attrs.evolve(SERVER, max_completed_uploads=2)
    h, _ = harness()
    events = _resume_all(h, config, _complete_uploads(h, config, 3))
    assert _unknown(events[0])
    assert [type(e) for e in events[1:]] == [UploadCompleted, UploadCompleted]


def test_a_server_may_remember_no_completed_upload() -> None:
    config = attrs.evolve(SERVER, max_completed_uploads=0)
    h, _ = harness()
    (event,) = _resume_all(h, config, _complete_uploads(h, config, 1))
    assert _unknown(event)


def test_an_ended_upload_whose_uploader_never_resumes() -> None:
    """Its reader had ended well: the session's expiry only releases its id."""
    h, uploads = harness()
    old, _ = ended_upload(h)
    old.disconnect()
    (reader,) = uploads.readers
    assert h.hub.statistics().uploads == 1
    h.advance(5.0)
    assert reader.outcome == (0, "")
    assert h.hub.statistics().uploads == 0
