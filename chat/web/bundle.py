"""The socket.io client bundle where Node's socket.io server serves it.

A page written for the Node server (the official chat example's included)
loads ``/socket.io/socket.io.js``; that path is inside engine.io's, which
would answer 400, so this middleware answers it first. The files are the
pinned npm package's, copied to ``static/vendor/`` by the build. Cached like
Node serves them: an ETag of the content, revalidated (a new release of the
client is picked up at once), 304 when unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Path -> (file in static/vendor, content type).
FILES = {
    "/socket.io/socket.io.js": ("socket.io.js", "application/javascript"),
    "/socket.io/socket.io.min.js": ("socket.io.min.js", "application/javascript"),
    "/socket.io/socket.io.js.map": ("socket.io.js.map", "application/json"),
    "/socket.io/socket.io.min.js.map": ("socket.io.min.js.map", "application/json"),
}


def none_match(header: str, etag: str) -> bool:
    """True when ``If-None-Match`` names ``etag`` (RFC 9110 13.1.2): ``*``,
    or a list of tags compared weakly (``W/"x"`` matches ``"x"``)."""
    if header.strip() == "*":
        return True
    tags = (tag.strip() for tag in header.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def client_files(wsgi_app, vendor: Path):
    """Wrap ``wsgi_app`` so that the client bundle's paths are served from
    ``vendor``; everything else passes through."""
    cache: dict[str, tuple[bytes, str, str]] = {}

    def load(path: str) -> tuple[bytes, str, str] | None:
        if path not in cache:
            name, content_type = FILES[path]
            try:
                body = (vendor / name).read_bytes()
            except OSError:
                return None
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            cache[path] = (body, content_type, etag)
        return cache[path]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in FILES or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return wsgi_app(environ, start_response)
        found = load(path)
        if found is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"the client bundle is not built (make)"]
        body, content_type, etag = found
        headers = [("ETag", etag), ("Cache-Control", "public, max-age=0")]
        if none_match(environ.get("HTTP_IF_NONE_MATCH", ""), etag):
            start_response("304 Not Modified", headers)
            return []
        headers += [
            ("Content-Type", f"{content_type}; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        start_response("200 OK", headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    return app
