"""The socket.io client bundle is served where Node's server serves it."""

import pytest


@pytest.mark.parametrize(
    ("path", "starts"),
    [
        ("/socket.io/socket.io.js", b"/*!\n * Socket.IO v4"),
        ("/socket.io/socket.io.min.js", b"/*!\n * Socket.IO v4"),
        ("/socket.io/socket.io.js.map", b"{"),
        ("/socket.io/socket.io.min.js.map", b"{"),
    ],
)
def test_client_bundle_is_served_with_a_validator(client, path, starts):
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.data.startswith(starts)
    etag = answer.headers["ETag"]
    assert answer.headers["Cache-Control"] == "public, max-age=0"
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_other_socket_io_paths_still_reach_engine_io(client):
    handshake = client.get("/socket.io/?EIO=4&transport=polling")
    assert handshake.status_code == 200 and handshake.data.startswith(b"0{")
    assert client.post("/socket.io/socket.io.js").status_code != 200
