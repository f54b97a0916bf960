"""What one socket.io session may send, checked before the work.

python-socketio hands client events named ``connect`` and ``disconnect`` to
the app and accepts binary attachments without a cap. Flask-SocketIO builds
its ``socketio.Server`` itself and has no hook for a subclass, so
``install`` moves the built objects onto the classes here and in
chat.internals.engineio_server (they add no slots, only methods) and
re-registers the handlers python-socketio bound before.
"""

from __future__ import annotations

import io
import logging

import gevent
import socketio
from socketio import packet

from chat.internals.engineio_server import (
    ChatEngineIOServer,
    SessionLimits,
    refuse_session,
)
from chat.limits.buckets import Budget
from chat.observe import metrics

log = logging.getLogger(__name__)

# Event names python-socketio fires itself; a client must not.
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})
MALFORMED = "The server could not decode that packet."
# Environ keys that belong to one HTTP request, not to a session.
_REQUEST_ONLY = frozenset({"wsgi.input", "gunicorn.socket", "wsgi.websocket"})


def chat_error(event: str, reason: str, message: str) -> list:
    """The arguments of a ``chat error`` event."""
    return ["chat error", {"event": event[:64], "reason": reason, "message": message}]


class TextPacket(packet.Packet):
    """A socket.io packet that is never binary: the contract is text.

    python-socketio walks every emitted payload looking for bytes
    (``data_is_binary``), a login's 50-message history included, a
    measurable share of CPU in a reconnect storm. Incoming binary packets are
    refused before they are decoded (``ChatSocketIOServer``), and a payload
    with bytes in it now fails to encode (loudly) instead of becoming
    attachments. The switch is python-socketio's own, the one its msgpack
    serializer uses.
    """

    uses_binary_events = False


class ChatSocketIOServer(socketio.Server):
    """socket.io that refuses reserved and binary events and budgets packets."""

    def setup_budgets(self, limits: SessionLimits) -> None:
        self.limits = limits
        self._budgets: dict[str, Budget] = {}

    def _handle_eio_message(self, eio_sid, data):
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and sock.closed:
            # What a closed session still had in flight: nothing to answer.
            return None
        polling = sock is None or not sock.upgraded
        if polling and not self._spend(eio_sid, len(data)):
            return refuse_session(
                self.eio, eio_sid, "transport_rate", "too many packets"
            )
        if isinstance(data, bytes) or data[:1] in ("5", "6"):
            # The contract is text; attachments would be kept without a cap.
            return refuse_session(self.eio, eio_sid, "binary_packet", "binary packet")
        if polling:
            # Many packets in one polling POST: let others run between them.
            # (A websocket's frames are budgeted, and its reader yields
            # before every message, in chat.transport.websocket.)
            gevent.sleep(0)
        try:
            if data[:3] == "42[" and eio_sid not in self._binary_packet:
                # An event on the main namespace without an acknowledgement
                # id, the usual packet: what python-socketio does with its
                # decoded packet, without making one.
                return self._handle_event(
                    eio_sid, None, None, self.packet_class.json.loads(data[2:])
                )
            return super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:
            return self._malformed(eio_sid, data, exc)

    def _spend(self, eio_sid: str, nbytes: int) -> bool:
        budget = self._budgets.get(eio_sid)
        if budget is None:
            budget = Budget(self.limits.packets_per_s, self.limits.bytes_per_s)
            self._budgets[eio_sid] = budget
        return budget.spend(nbytes)

    def _malformed(self, eio_sid, data, exc) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if data[:1] == "2" and sid is not None:
            # An event whose JSON is broken: say so, keep the connection.
            metrics.REFUSED.labels("malformed_packet").inc()
            log.info("malformed event", extra={"sid": sid, "reason": str(exc)[:80]})
            self._reply(eio_sid, *chat_error("", "malformed_packet", MALFORMED))
            return None
        return refuse_session(
            self.eio, eio_sid, "malformed_packet", "undecodable packet"
        )

    def _handle_event(self, eio_sid, namespace, id, data):
        name = data[0] if data else None
        if not isinstance(name, str) or name in RESERVED_EVENTS:
            metrics.REFUSED.labels("unknown_event").inc()
            self._reply(
                eio_sid,
                *chat_error(
                    str(name), "unknown_event", "This server does not know that event."
                ),
            )
            return None
        return super()._handle_event(eio_sid, namespace, id, data)

    def _send_eio_packet(self, eio_sid, eio_pkt):
        """One recipient of a broadcast: to its socket without engine.io's
        lookups and warning (this runs once per recipient)."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and not sock.closed:
            sock.send(eio_pkt)

    def _reply(self, eio_sid: str, *args) -> None:
        """An event to one local session, straight to it: never through Redis."""
        self._send_packet(
            eio_sid, self.packet_class(packet.EVENT, namespace="/", data=list(args))
        )

    def _handle_eio_connect(self, eio_sid, environ):
        """Keep the session's environ without the request's body and socket.

        python-socketio keeps the environ of a session's first request for
        its whole life (Flask-SocketIO builds each event's request context
        from it). Its ``wsgi.input`` would keep that request's buffered
        reader alive, and ``gunicorn.socket`` the socket, long after the
        request ended; events never read either.
        """
        slim = {k: v for k, v in environ.items() if k not in _REQUEST_ONLY}
        slim["wsgi.input"] = io.BytesIO()
        return super()._handle_eio_connect(eio_sid, slim)

    def _handle_eio_disconnect(self, eio_sid, reason):
        self._budgets.pop(eio_sid, None)
        return super()._handle_eio_disconnect(eio_sid, reason)


def install(server: socketio.Server, config) -> None:
    """Move Flask-SocketIO's server and its engine.io onto the guarded classes."""
    limits = SessionLimits.from_config(config)
    server.__class__ = ChatSocketIOServer
    server.packet_class = TextPacket
    server.setup_budgets(limits)
    server.eio.__class__ = ChatEngineIOServer
    server.eio.setup_limits(limits, server)
    # python-socketio registered bound methods of its own class at __init__.
    server.eio.on("connect", server._handle_eio_connect)
    server.eio.on("message", server._handle_eio_message)
    server.eio.on("disconnect", server._handle_eio_disconnect)
