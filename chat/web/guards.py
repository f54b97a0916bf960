"""WSGI middleware around the whole app: Host check, drain, safe text answers.

It wraps Flask and engine.io alike, so the socket.io endpoint gets the same
checks as the page.
"""

from __future__ import annotations

import logging
import re

from chat.observe import metrics
from chat.transport.query import query_with

log = logging.getLogger(__name__)

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
# The page loads its own script, style and socket.io bundle, connects back
# to its own origin, and may be framed by no other site (clickjacking the
# send button). ``X-Frame-Options`` says the same to older browsers.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'self'"
)
_PAGE_HEADERS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "SAMEORIGIN"),
]
_PORT = re.compile(r"(?::[0-9]{1,5})?")


def _host_name(host_header: str) -> str | None:
    """``example.com:5050`` -> ``example.com``; ``[::1]:5050`` -> ``::1``;
    None when anything but ``:port`` follows the name (``[::1]evil``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        return name if bracket and _PORT.fullmatch(rest) else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name if _PORT.fullmatch(":" + port) else None
    return host


class Guard:
    """Refuse unknown hosts, new sessions while draining; add ``nosniff``.

    - Host: a page on another name that resolves here (DNS rebinding) would
      pass the same-origin check, which compares Origin with Host; only the
      names in ALLOWED_HOSTS are served ("*" serves any).
    - Draining: once SIGTERM arrived, a socket.io handshake gets 503, so a
      load balancer or a browser retries on a live instance.
    - Busy: while too many logins wait (chat.limits.admission), a handshake gets
      503 with a jittered ``Retry-After``: a reconnect storm is spread over
      the instances and over time instead of stalling everyone here.
    - Every answer carries ``X-Content-Type-Options: nosniff``, so an error
      body that echoes input is never sniffed into HTML.
    - ``session_refusal(environ)`` answers socket.io requests over a session
      limit (chat.internals.engineio_server) before engine.io does any work.

    ``refusal`` is also asked by the websocket handler *before* it answers
    an upgrade with 101 (chat.transport.handler): a refusal sent after the 101 is
    lost, and a client then waits out its whole connect timeout (20 s for
    socket.io's) on a websocket that closed without a word, where nginx
    would have moved a 503 to another instance at once.
    """

    def __init__(
        self, wsgi_app, state, allowed_hosts: list[str], session_refusal=None
    ) -> None:
        self.wsgi_app = wsgi_app
        self.state = state
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower() for h in allowed_hosts}
        self.session_refusal = session_refusal or (lambda environ: None)

    def refusal(self, environ) -> tuple[str, list, list[bytes]] | None:
        """(status, headers, body) for a request refused here, or None."""
        host = _host_name(environ.get("HTTP_HOST", ""))
        if host is None or (not self.any_host and host not in self.allowed):
            log.info("refused a request for an unknown host: %r", (host or "")[:64])
            return "400 Bad Request", list(_TEXT), [b"Unknown host"]
        if self.state.draining and _is_handshake(environ):
            headers = [*_TEXT, ("Connection", "close"), ("Retry-After", "1")]
            return "503 Service Unavailable", headers, [b"shutting down"]
        if self.state.admission.busy() and _is_handshake(environ):
            metrics.REFUSED.labels("busy").inc()
            headers = [*_TEXT, ("Retry-After", self.state.admission.retry_after())]
            return "503 Service Unavailable", headers, [b"busy: try again shortly"]
        if environ.get("PATH_INFO", "").startswith("/socket.io"):
            return self.session_refusal(environ)
        return None

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, with_safety_headers(headers), exc_info)

        # An upgrade the websocket handler already asked about is not asked
        # again (``refusal_before_upgrade``).
        passed = environ.pop(_PASSED, False)
        refused = None if passed else self.refusal(environ)
        if refused is not None:
            status, headers, body = refused
            start(status, headers)
            return body
        return self.wsgi_app(environ, start)


def with_safety_headers(headers: list) -> list:
    """``headers`` with nosniff, the CSP and X-Frame-Options unless set."""
    names = {k.lower() for k, _ in headers}
    if "x-content-type-options" not in names:
        headers = [*headers, ("X-Content-Type-Options", "nosniff")]
    if "content-security-policy" not in names:
        headers = [*headers, *_PAGE_HEADERS]
    return headers


def refusal_before_upgrade(application, environ) -> tuple | None:
    """What the app's ``Guard`` refuses ``environ`` with, asked before a
    websocket upgrade; None when it passes (or the app has no guard)."""
    wsgi_app = getattr(application, "wsgi_app", application)
    if not isinstance(wsgi_app, Guard):
        return None
    refused = wsgi_app.refusal(environ)
    if refused is None:
        environ[_PASSED] = True
    return refused


# Set in an upgrade's environ once the guard let it pass.
_PASSED = "chat.guard_passed"


def session_id(environ) -> str | None:
    """The engine.io session a request belongs to, read as engine.io reads
    it (first value): None opens a new one."""
    query = query_with(environ, "sid")
    return query["sid"][0] if "sid" in query else None


def _is_handshake(environ) -> bool:
    return environ.get("PATH_INFO", "").startswith("/socket.io") and (
        session_id(environ) is None
    )
