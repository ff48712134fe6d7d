"""Bidirectional streams in the core (spec section 6.4, R-BIDI-*): one handle, two directions,
each with its own seqs, credit, end, error and cancel."""

from __future__ import annotations

import pytest

from streamproto import (
    CancelRequested,
    Config,
    Connection,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Feature,
    HState,
    LocalProtocolError,
    RequestAccepted,
    RequestRejected,
    Role,
    StreamEnded,
    Unsubscribed,
    UploadCancelled,
    UploadData,
    UploadEnded,
    UploadFailed,
    Writable,
    WriteResult,
)
from streamproto._frames import Credit, Data, Goaway, Open, UploadCancel, encode
from streamproto._state import BIDI_ROUTES, BIDI_SIDES, HANDLE_TRANSITIONS, Direction, Input
from streamproto.testing import ConnectionPair

CH = "demo:x"
RX, TX = Direction.RECEIVING, Direction.SENDING


def bidi_pair(
    client: Config | None = None, server: Config | None = None
) -> tuple[ConnectionPair, int]:
    """A handshaken pair with one accepted bidirectional stream."""
    pair = ConnectionPair(client, server)
    pair.handshake()  # announces Feature.BIDI
    h = pair.open(CH, b"args", bidi=True)
    pair.accept(h, stream_id="s1")
    return pair, h


def test_chunks_flow_both_ways_on_one_handle_with_their_own_seqs() -> None:
    pair, h = bidi_pair()
    t = pair.send_data(h, b"d1", b"d2")  # server -> client
    assert t.client == [DataReceived(h, 1, (b"d1", b"d2"))]
    t = pair.send_data(h, b"u1", by=pair.client)  # client -> server, its own seq 1
    assert t.server == [UploadData(h, 1, (b"u1",))]
    pair.send_data(h, b"d3")
    assert pair.client.handle_state(h, RX) is HState.ACTIVE
    assert pair.client.handle_state(h, TX) is HState.ACTIVE
    assert pair.server.handle_state(h) is HState.ACTIVE


def test_the_client_ending_its_direction_leaves_the_servers_running() -> None:
    pair, h = bidi_pair()
    pair.send_data(h, b"u1", by=pair.client)
    t = pair.send_end(h, by=pair.client)
    assert t.server == [UploadEnded(h, 1)]
    assert pair.client.handle_state(h, TX) is HState.CLOSED
    assert pair.server.handle_state(h, RX) is HState.CLOSED
    assert pair.client.send_data(h, b"late") is WriteResult.CLOSED  # a closed direction
    pair.send_data(h, b"d1", b"d2")  # the other direction runs on
    assert pair.client.handle_state(h) is HState.ACTIVE
    t = pair.send_end(h)
    assert t.client == [StreamEnded(h, 2)]
    for conn in (pair.client, pair.server):
        assert conn.handle_state(h) is HState.CLOSED
        assert conn.statistics().open_handles == 0


def test_the_server_ending_first_leaves_the_client_writing() -> None:
    pair, h = bidi_pair()
    pair.send_end(h)
    assert pair.client.handle_state(h, RX) is HState.CLOSED
    assert pair.client.handle_state(h) is HState.ACTIVE  # the sending direction
    t = pair.send_data(h, b"u1", b"u2", by=pair.client)
    assert t.server == [UploadData(h, 1, (b"u1", b"u2"))]
    pair.send_error(h, 1001, "gave up", by=pair.client)
    assert pair.server.handle_state(h) is HState.CLOSED


def test_cancel_closes_the_downstream_only() -> None:
    pair, h = bidi_pair()
    t = pair.cancel(h)
    assert t.server == [CancelRequested(h)]
    assert pair.server.handle_state(h, TX) is HState.CLOSED
    assert pair.server.send_data(h, b"x") is WriteResult.CLOSED
    pair.send_data(h, b"u1", by=pair.client)
    pair.send_end(h, by=pair.client)
    assert pair.client.handle_state(h) is HState.CLOSED


def test_unsubscribe_closes_the_downstream_only() -> None:
    pair, h = bidi_pair()
    t = pair.unsubscribe(h)
    assert t.server == [Unsubscribed(h)]
    pair.send_data(h, b"u1", by=pair.client)


def test_upload_cancel_closes_the_upstream_only() -> None:
    pair, h = bidi_pair()
    t = pair.cancel_upload(h, message="enough")
    assert t.client == [UploadCancelled(h, ErrorCode.UPLOAD_CANCELLED, "enough")]
    assert pair.client.send_data(h, b"x") is WriteResult.CLOSED
    assert not pair.server.cancel_upload(h)  # already closed: no second UPLOAD_CANCEL
    pair.send_data(h, b"d1")
    pair.send_end(h)
    assert pair.server.handle_state(h) is HState.CLOSED


def test_frames_that_crossed_a_half_close_are_discarded() -> None:
    pair, h = bidi_pair()
    pair.server.send_data(h, b"in flight")
    pair.client.cancel(h)  # the client leaves before the DATA arrives
    t = pair.transfer()
    assert t.client == []  # discarded, not a protocol error
    assert t.server == [CancelRequested(h)]
    pair.send_data(h, b"u1", by=pair.client)  # the upstream is untouched


def test_the_client_writes_before_accept_and_accept_brings_the_credit() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.open(CH, bidi=True)
    assert pair.client.send_data(h, b"early") is WriteResult.ACCEPTED
    assert pair.client.data_to_send() == b""  # no credit before ACCEPT
    assert pair.server.accept(h)
    t = pair.transfer()
    assert t.client == [RequestAccepted(h, "", 1, 0)]
    assert t.server == [UploadData(h, 1, (b"early",))]


def test_reject_closes_both_directions() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.open(CH, bidi=True)
    pair.client.send_data(h, b"queued")
    pair.reject(h, ErrorCode.NOT_ALLOWED, "no")
    for conn in (pair.client, pair.server):
        assert conn.handle_state(h, RX) is conn.handle_state(h, TX) is HState.CLOSED
    assert pair.client.send_data(h, b"x") is WriteResult.CLOSED
    assert pair.client.statistics().queued_bytes == 0


def test_upstream_credit_comes_back_as_the_server_consumes() -> None:
    pair, h = bidi_pair(server=Config(window_chunks=2))
    for i in range(6):  # three windows: only CREDIT lets this through
        pair.send_data(h, b"%d" % i, by=pair.client)
    pair.send_data(h, b"down")


def test_a_blocked_client_writer_is_told_writable_again() -> None:
    pair, h = bidi_pair(client=Config(max_queued_chunks=1), server=Config(window_chunks=1))
    assert pair.client.send_data(h, b"1") is WriteResult.ACCEPTED
    assert pair.client.send_data(h, b"2") is WriteResult.ACCEPTED
    assert pair.client.send_data(h, b"3") is WriteResult.BLOCKED
    assert not pair.client.has_room(h, 1)
    t = pair.transfer()
    assert Writable(h) in t.client


def test_manual_credit_on_the_receiving_direction() -> None:
    pair, h = bidi_pair(server=Config(auto_credit=False, window_chunks=2))
    pair.send_data(h, b"1", b"2", by=pair.client)
    pair.server.consume(h, 2, 2)
    pair.send_data(h, b"3", by=pair.client)
    pair.send_end(h, by=pair.client)
    pair.server.consume(h, 1, 1)  # the receiving direction is closed: nothing to grant
    with pytest.raises(LocalProtocolError) as err:
        pair.client.consume(h, 0, 0)
    assert err.value.code == ErrorCode.INVALID_STATE  # the client has auto credit on


def test_the_client_fails_its_direction_before_accept() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.open(CH, bidi=True)
    assert pair.client.send_error(h, 1001, "changed my mind")
    t = pair.transfer()
    assert t.server == [UploadFailed(h, 1001, "changed my mind", 0)]
    assert pair.server.handle_state(h, RX) is HState.CLOSED
    assert pair.server.handle_state(h, TX) is HState.REQUESTED
    t = pair.accept(h)  # answers the downstream alone
    pair.send_data(h, b"d1")
    pair.send_end(h)
    assert pair.client.handle_state(h) is HState.CLOSED


def test_the_client_cancels_before_accept_and_keeps_writing() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.open(CH, bidi=True)
    pair.client.cancel(h)
    t = pair.transfer()
    assert t.server == [CancelRequested(h)]
    assert pair.server.accept(h)  # the upstream is still to be answered
    t = pair.transfer()
    assert t.client == [RequestAccepted(h, "", 1, 0)]
    pair.send_data(h, b"u1", by=pair.client)


def test_a_client_needs_the_feature_and_cannot_join() -> None:
    pair = ConnectionPair()
    pair.handshake(features=Feature.QUERIES)
    with pytest.raises(LocalProtocolError) as err:
        pair.client.open(CH, bidi=True)
    assert err.value.code == ErrorCode.INVALID_STATE
    pair = ConnectionPair()
    pair.handshake()
    with pytest.raises(LocalProtocolError) as err:
        pair.client.open(CH, bidi=True, join=True)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


def _raw_server() -> Connection:
    pair = ConnectionPair()
    pair.handshake()
    return pair.server


def test_a_server_refuses_bidi_with_join() -> None:
    server = _raw_server()
    events = server.receive_data(encode(Open(1, CH, "s", 8, 8192, join=True, bidi=True)))
    assert events == []
    assert b"R-BIDI-1" in server.data_to_send()


def test_a_bidi_counts_as_an_upload_toward_the_limit() -> None:
    pair = ConnectionPair(None, Config(max_uploads=1))
    pair.handshake()
    pair.upload(CH, "u")
    h = pair.client.open(CH, bidi=True)
    t = pair.transfer()
    assert t.client == [RequestRejected(h, ErrorCode.LIMIT_EXCEEDED, t.client[0].message)]  # type: ignore[union-attr]


def test_frames_of_the_wrong_direction_are_protocol_errors() -> None:
    pair, h = bidi_pair()
    # UPLOAD_CANCEL travels server -> client only: from a client it is a fault.
    events = pair.server.receive_data(encode(UploadCancel(h, 107, "")))
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code == ErrorCode.PROTOCOL_ERROR
    pair, h = bidi_pair()
    # CREDIT for the upstream comes from the server: the client's CREDIT is for the downstream.
    assert pair.server.receive_data(encode(Credit(h, 1, 1))) == []


def test_data_on_a_closed_direction_is_discarded_and_beyond_credit_is_a_fault() -> None:
    pair, h = bidi_pair()
    pair.send_data(h, b"u1", by=pair.client)
    pair.send_end(h, by=pair.client)
    assert pair.server.receive_data(encode(Data(h, 2, (b"late",)))) == []  # crossed the END
    pair, h = bidi_pair(None, Config(window_chunks=1))
    events = pair.server.receive_data(encode(Data(h, 1, (b"1", b"2"))))
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code == ErrorCode.FLOW_CONTROL_ERROR


def test_goaway_answers_a_bidi_the_server_never_saw() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.client.open(CH, bidi=True)
    pair.client.send_data(h, b"queued")
    events = pair.client.receive_data(encode(Goaway(0, h - 1, "")))
    assert RequestRejected(h, ErrorCode.SERVER_SHUTDOWN, "not processed") in events
    assert pair.client.handle_state(h, TX) is HState.CLOSED


def test_a_lost_connection_closes_both_directions() -> None:
    pair, h = bidi_pair()
    pair.disconnect(pair.server)
    assert pair.client.handle_state(h, RX) is pair.client.handle_state(h, TX) is HState.CLOSED


def test_handle_state_of_a_direction_a_one_way_handle_lacks() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.subscribe(CH, "s")
    assert pair.client.handle_state(h, RX) is HState.REQUESTED
    assert pair.client.handle_state(h, TX) is HState.REQUESTED  # one-way: its own state


def test_joined_cannot_answer_a_bidi() -> None:
    pair = ConnectionPair()
    pair.handshake()
    h = pair.open(CH, bidi=True)
    with pytest.raises(LocalProtocolError) as err:
        pair.server.accept(h, joined=True)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


def test_the_routing_table_covers_every_input_of_both_machines() -> None:
    for role, (rx, tx) in BIDI_SIDES.items():
        for side, direction in ((rx, RX), (tx, TX)):
            for _, inp in HANDLE_TRANSITIONS[side]:
                if inp in (Input.DRAINED, Input.AWAIT_RESULT):  # internal, per machine
                    continue
                assert BIDI_ROUTES[inp] in (direction, Direction.BOTH), (role, side, inp)
    assert set(BIDI_SIDES) == {role.value for role in Role}


def test_send_data_many_writes_the_sending_direction() -> None:
    pair, h = bidi_pair()
    assert pair.client.send_data_many(h, [b"a", b"b"]) == (2, WriteResult.ACCEPTED)
    t = pair.transfer()
    assert t.server == [UploadData(h, 1, (b"a", b"b"))]
    pair.cancel_upload(h)
    assert pair.client.send_data_many(h, [b"c"]) == (0, WriteResult.CLOSED)
    assert not pair.client.has_room(h, 1)


def test_cancel_after_the_downstream_ended_is_a_no_op() -> None:
    pair, h = bidi_pair()
    pair.send_end(h)
    pair.client.cancel(h)  # nothing to cancel: no frame
    assert pair.client.data_to_send() == b""
    pair.send_data(h, b"u1", by=pair.client)
