"""A client frame already buffered is decoded in place exactly as
gevent-websocket's ``Header.decode_header`` decodes it from the stream,
refusals included (chat.transport.websocket)."""

from __future__ import annotations

import pytest
from geventwebsocket.exceptions import ProtocolError, WebSocketError

from chat.transport.websocket import OverLimit
from tests.rawws import RawWebSocket
from tests.serverws import server_websocket

frame = RawWebSocket.frame
FRAMES = [
    frame(b'42["new message","hi"]'),
    frame(b""),
    frame(b"x" * 125),
    frame(b"x" * 126),  # a 16-bit length: the stream's path
    frame(b"part", fin=False),
    frame(b"more", opcode=0),
    frame(b"ping", opcode=9),
    frame(b"", opcode=10),
    frame(b"\x03\xe8bye", opcode=8),
    frame(b"ping", opcode=9, fin=False),  # a fragmented control frame
    bytes([0x81 | 0x40]) + frame(b"rsv")[1:],  # a reserved bit
    bytes([0x81, 5]) + b"plain",  # unmasked
    frame(b"y" * 100) + frame(b"after"),  # two in one read
]


def _outcome(websocket, count):
    frames = []
    try:
        for _ in range(count):
            header, payload = websocket.read_frame()
            frames.append(
                (header.fin, header.opcode, header.flags, header.length, bytes(payload))
            )
    except (ProtocolError, WebSocketError, OverLimit) as exc:
        frames.append((type(exc).__name__, getattr(exc, "code", None)))
    return frames


@pytest.mark.parametrize("data", FRAMES)
@pytest.mark.parametrize("limits", [None, {"MAX_HTTP_BUFFER_BYTES": 50}])
def test_a_buffered_frame_reads_as_the_stream_reads_it(data, limits):
    count = 2 if data.count(b"after") else 1
    buffered, _, opened_a = server_websocket(limits)
    streamed, client, opened_b = server_websocket(limits)
    try:
        buffered.inbuf = data  # what ready_to_read took from the kernel
        client.sendall(data)
        client.shutdown(2)
        assert _outcome(buffered, count) == _outcome(streamed, count)
    finally:
        for opened in opened_a + opened_b:
            opened.close()
