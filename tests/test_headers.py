"""chat.transport.headers reads request headers as the email parser did, faster."""

from __future__ import annotations

import http.client
import io

import pytest
from gevent.pywsgi import OldMessage

from chat.transport.headers import parse_headers

BLOCKS = [
    b"Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"Host: a\r\n\r\n",
    b"\r\n",
    b"",
    b"Host:a\nX-Empty:\nX-Blank:   \t \nX-Tab:\tv\t\n\n",
    b"Cookie: a=1\r\nCookie: b=2\r\nHOST: upper\r\n\r\n",
    b"X-Folded: one\r\n two\r\n\tthree\r\nHost: a\r\n\r\n",
    b" leading-fold\r\nHost: a\r\n\r\n",
    b"Host: a\r\nthis is no header\r\nX-After: lost\r\n\r\n",
    b"Host: a\r\nX-Latin: caf\xe9\r\n\r\n",
    b"X_Under_Score: 1\r\nX-Colons: a:b:c\r\n\r\n",
    b"Host: a\r\nEOF-without-blank-line: 1\r\n",
]


def stock(block: bytes) -> OldMessage:
    """What gevent's pywsgi used: http.client through the email parser."""
    return http.client.parse_headers(io.BytesIO(block), _class=OldMessage)


@pytest.mark.parametrize("block", BLOCKS)
def test_headers_match_the_email_parsers(block):
    ours, theirs = parse_headers(io.BytesIO(block)), stock(block)
    assert ours._headers == theirs._headers
    assert list(ours.headers) == list(theirs.headers)
    assert ours.get("host") == theirs.get("host")
    for name in ("host", "HOST", "x-latin", "cookie", "x-folded", "x-empty", "nope"):
        assert ours.get(name, "-") == theirs.get(name, "-")
        assert ours[name] == theirs[name]
        assert ours.getheader(name) == theirs.getheader(name)
    assert ours.items() == theirs.items()
    assert ours.typeheader == theirs.typeheader
    assert ours.status == ""


def test_the_rest_of_the_stream_is_left_unread():
    stream = io.BytesIO(b"Host: a\r\nContent-Length: 4\r\n\r\nbody")
    assert parse_headers(stream).get("content-length") == "4"
    assert stream.read() == b"body"


def test_a_line_too_long_is_reported_as_pywsgi_expects():
    block = b"X-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert parse_headers(io.BytesIO(block)).status == "Line too long"


def test_more_than_a_hundred_headers_are_refused_like_http_client():
    block = b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(http.client.HTTPException):
        stock(block)
    with pytest.raises(http.client.HTTPException):
        parse_headers(io.BytesIO(block))
