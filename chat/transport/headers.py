"""HTTP request headers for gevent's pywsgi, without the email parser.

pywsgi (gevent 26.9) reads request headers with ``http.client.parse_headers``,
which hands them to ``email.feedparser``, a large share of an instance's
CPU while thousands of websockets reconnect at once. ``parse_headers`` here
reads them with the same limits (a line of 64 KiB, 100 lines) and gives the
same object, gevent's ``OldMessage`` (an ``email.message.Message``) holding
the same (name, value) pairs as the email parser's ``compat32`` policy
would: a value loses the blanks after the colon and its line end, a folded
line (starting with a blank) is kept in the value as sent, and a line that
is no header ends the headers (the email parser makes it the body, which
pywsgi never reads). tests/test_headers.py compares the two on the odd
cases; tests/test_internals.py fails if pywsgi stops calling
``MessageClass`` or ``OldMessage`` goes.

Reading a header back (pywsgi asks for half a dozen per request) runs the
value through the ``compat32`` policy's ``header_fetch_parse``, which
returns it unchanged unless it holds surrogates, and a value decoded from
ISO-8859-1 never does: ``RequestHeaders`` returns the value as it is.
"""

from __future__ import annotations

import http.client
import re

from gevent.pywsgi import OldMessage

MAX_LINE = 65536  # http.client._MAXLINE
MAX_HEADERS = 100  # http.client._MAXHEADERS
# What the email parser takes for a header line: a name of printable ASCII
# other than ':' (possibly empty), then ':'.
_NAME = re.compile(r"[\041-\071\073-\176]*:")


class RequestHeaders(OldMessage):
    """gevent's ``OldMessage`` whose values, decoded from ISO-8859-1, are
    returned as they are (what ``compat32`` returns for such a value)."""

    def get(self, name, failobj=None):
        name = name.lower()
        for key, value in self._headers:
            if key.lower() == name:
                return value
        return failobj

    def items(self):
        return list(self._headers)


def parse_headers(fp, *_) -> RequestHeaders:
    """Read header lines up to the blank one; ``status`` says what was wrong."""
    message = RequestHeaders()
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            message.status = "Line too long"  # as gevent's headers_factory
            return message
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    fields: list[list[str]] = []  # the source lines of each header
    for raw in lines[:-1]:
        line = raw.decode("iso-8859-1")
        if line[:1] in (" ", "\t"):
            if fields:  # a folded line continues the header before it
                fields[-1].append(line)
            continue
        if not _NAME.match(line):
            break
        fields.append([line])
    message._headers = [_header(source) for source in fields]
    return message


def _header(source: list[str]) -> tuple[str, str]:
    """compat32's ``header_source_parse``."""
    name, value = source[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(source[1:])
    return name, value.rstrip("\r\n")
