"""The socket.io Admin UI: python-socketio's instrumentation of this server
(ADMIN_UI), and the UI itself served from the pinned npm package's
``ui/dist`` (copied to static/vendor/admin-ui by the build), never from the
hosted site.

The UI logs in with any user name and an operator token (OPERATOR_TOKENS) as
the password. Off by default: in ``development`` mode the instrumentation
wraps every emit of the server, which costs CPU on every delivery.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory

bp = Blueprint("admin_ui", __name__, url_prefix="/admin")

# Its own policy: the UI's framework sets styles inline; it loads fonts and
# icons from CDNs, which stay blocked (the UI works without them).
ADMIN_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


def instrument(socketio, config, server_id: str) -> None:
    """Feed the Admin UI from this server, when ADMIN_UI asks for it."""
    mode = config["ADMIN_UI"]
    if mode == "off" or not config["OPERATOR_TOKENS"]:
        return
    tokens = [t.encode() for t in config["OPERATOR_TOKENS"]]

    def allowed(auth) -> bool:
        password = auth.get("password") if isinstance(auth, dict) else None
        if not isinstance(password, str):
            return False
        given = password.encode()
        # Every token is compared, so the time says nothing of which matched.
        return any([hmac.compare_digest(given, token) for token in tokens])

    socketio.server.instrument(auth=allowed, mode=mode, server_id=server_id)


@bp.get("/", defaults={"path": "index.html"})
@bp.get("/<path:path>")
def ui(path: str):
    if current_app.config["ADMIN_UI"] == "off":
        abort(404)
    folder = Path(current_app.static_folder) / "vendor" / "admin-ui"
    answer = send_from_directory(folder, path)
    answer.headers["Content-Security-Policy"] = ADMIN_CSP
    return answer
