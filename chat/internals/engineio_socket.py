"""engine.io sockets that write websocket frames directly and ping from a timer.

python-engineio gives every websocket a writer greenlet fed by a queue, and
a ping greenlet that sleeps ``ping_interval``. Each delivery then costs a
ping-timeout check, a queue put, a ``logger.info`` call, a switch to that
socket's writer, a poll, the packet encoded and a frame built again for
every recipient; each held websocket costs two greenlets' stacks.

``ChatSocket`` keeps engine.io's protocol and changes how packets leave:

- Once its transport is a websocket, a packet is written from the greenlet
  that sends it, as a frame built once per packet (a broadcast shares one
  packet, so every recipient gets the same bytes), through
  ``LimitedWebSocket.write``: ordered, non-blocking, with a bounded backlog
  drained by one short-lived flusher. No writer greenlet, no queue.
- Pings come from a libev timer in the hub, not a sleeping greenlet, and
  so does the end of a session whose client stopped answering them.
- Reading needs no greenlet while the client is quiet: the websocket is
  parked in a read watcher of the loop, and its next bytes start a reader.
  An idle session holds no greenlet at all.
- Nothing is logged per packet.
- A send to a client past its ping window is dropped rather than closing the
  session in the emitting greenlet (that runs the disconnect handlers, which
  talk to Redis); engine.io's service task closes it within the window.

Polling sessions keep engine.io's queue (``BoundedSendQueue`` in
chat.internals.engineio_server). ``ChatEngineIOServer`` moves each new
socket onto this class when engine.io reports the connection, before its
first ping or its first read.
"""

from __future__ import annotations

import logging
import time

import gevent
from engineio import exceptions, packet
from engineio.socket import Socket
from geventwebsocket.websocket import WebSocket

from chat.transport.websocket import LimitedWebSocket
from chat.transport.writer import ENDING_GRACE_S, encode_frame

log = logging.getLogger(__name__)

# Shared by every socket: its encoding and frame are computed once.
_PING = packet.Packet(packet.PING)
# How long past the ping timeout a pong may still come (the timer's and the
# clock's granularity).
PONG_GRACE_S = 0.1


class _NoQueue:
    """The send queue of a socket that writes directly: what engine.io's
    ``close`` still puts there (its end marker) is dropped."""

    __slots__ = ()

    def put(self, item, block=True, timeout=None) -> None:
        return None

    def qsize(self) -> int:
        return 0

    def join(self, timeout=None) -> None:
        return None


_NO_QUEUE = _NoQueue()


def packet_frame(pkt: packet.Packet) -> bytes:
    """The websocket frame of an engine.io packet, built once per packet."""
    frame = pkt.__dict__.get("ws_frame")
    if frame is None:
        encoded = pkt.encode()
        if pkt.binary:
            frame = encode_frame(encoded, WebSocket.OPCODE_BINARY)
        else:
            frame = encode_frame(encoded.encode("utf-8"))
        pkt.ws_frame = frame
    return frame


class ChatSocket(Socket):
    """An engine.io socket with direct websocket writes and timer pings."""

    # Class defaults: a socket that never upgrades stores neither.
    direct: LimitedWebSocket | None = None
    ping_timer = None
    # Set while the reader handles an event, and by ``end``: a session asked
    # to end while it handles one ends after it (see ``end``).
    handling = False
    ending = False

    # -- sending ---------------------------------------------------------------
    def send(self, pkt):
        """Send a packet: straight to the websocket, or to the polling queue."""
        if self.closed:
            return
        last_ping = self.last_ping
        if last_ping and time.time() - last_ping > self.server.ping_timeout:
            return  # gone; engine.io's service task closes it
        direct = self.direct
        if direct is None:
            self.queue.put(pkt)
        else:
            direct.write(packet_frame(pkt))

    def close(self, wait=True, abort=False, reason=None):
        """Close the session; a websocket gets the CLOSE packet, then its close
        frame, after what is already queued for it."""
        ending = not self.closed and not self.closing
        direct = self.direct
        # Nothing reads the queue of a direct socket: never wait on it.
        super().close(wait=wait and direct is None, abort=abort, reason=reason)
        if ending:
            if self.ping_timer is not None:
                self.ping_timer.close()
                self.ping_timer = None
            if direct is not None:
                direct.on_overflow = None  # a cycle through this socket
                direct.close()

    def end(self) -> None:
        """Close for a drain without cutting off what the client already sent.

        A websocket session in the middle of an event ends once the event's
        answer (its acknowledgement) is written, and so does one whose
        client's next frames are already here: those are handled first. A
        stock socket.io client fails every acknowledgement still pending
        when its transport closes, so closing under a running handler would
        refuse a message the room did get. Anything else closes at once, as
        a polling session does; the drain closes what is left at its deadline.
        """
        if self.closed:
            return
        direct = self.direct
        self.ending = True
        if direct is not None and (self.handling or direct.holds_unread()):
            return  # the reader closes it (``_read_forever``)
        self.close(wait=False, abort=True, reason=self.server.reason.SERVER_DISCONNECT)

    # -- receiving --------------------------------------------------------------
    def receive(self, pkt):
        """engine.io's ``receive`` without a log line per packet."""
        if pkt.packet_type == packet.PONG:
            self.schedule_ping()
        elif pkt.packet_type == packet.MESSAGE:
            self.server._trigger_event(
                "message", self.sid, pkt.data, run_async=self.server.async_handlers
            )
        elif pkt.packet_type == packet.UPGRADE:
            self.send(packet.Packet(packet.NOOP))
        elif pkt.packet_type == packet.CLOSE:
            self.close(
                wait=False, abort=True, reason=self.server.reason.CLIENT_DISCONNECT
            )
        else:
            raise exceptions.UnknownPacketError()

    # -- pings ------------------------------------------------------------------
    def schedule_ping(self):
        """The next ping in ``ping_interval``, from a timer rather than a greenlet.

        A new libev timer each time: restarting one that has fired makes it
        fire again at once (gevent 26.9.0's libev loop).
        """
        if self.last_ping and not self.closed:
            self.last_ping = None
            if self.ping_timer is not None:
                self.ping_timer.close()
            timer = gevent.get_hub().loop.timer(self.server.ping_interval)
            self.ping_timer = timer
            timer.start(self._ping_due)

    def _ping_due(self) -> None:
        """Runs in the hub: it must not block (sends here never do)."""
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        try:
            self.send(_PING)
        except Exception:
            log.exception("sending a ping failed")
        if self.closing or self.closed:
            return  # the send closed it (a backlog past its bound)
        # No answer within the ping timeout: the client is gone. The timer
        # that fired goes; the next fires then, unless a pong comes first
        # (``schedule_ping`` closes it).
        if self.ping_timer is not None:
            self.ping_timer.close()
        timer = gevent.get_hub().loop.timer(self.server.ping_timeout + PONG_GRACE_S)
        self.ping_timer = timer
        timer.start(self._pong_overdue)

    def _pong_overdue(self) -> None:
        """Runs in the hub; the close runs the disconnect handlers, which may
        talk to Redis, so it runs in a greenlet of its own.

        engine.io's service task finds such a session by looking at every
        session in turn, waking once per session (``ChatEngineIOServer``
        keeps it as a slow safety net): here each session's own timer does.
        """
        if self.ping_timer is not None:
            self.ping_timer.close()
            self.ping_timer = None
        if self.last_ping and not (self.closing or self.closed):
            gevent.spawn(self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        if self.closing or self.closed:
            return
        log.info("%s: client is gone (no pong), closing the session", self.sid)
        # As engine.io's ``check_ping_timeout``: a CLOSE packet, in case the
        # connection is only half-open.
        self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)

    # -- the websocket ----------------------------------------------------------
    def _websocket_handler(self, ws):
        """engine.io's websocket loop, with the writer greenlet replaced."""
        websocket = getattr(ws, "_sock", None)
        if not isinstance(websocket, LimitedWebSocket):
            return super()._websocket_handler(ws)
        if self.connected:
            # An upgrade from polling: sends are held in the queue until done.
            self.upgrading = True
            if not self._upgrade(websocket):
                self.upgrading = False
                return []
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True
        self._go_direct(websocket)
        # The rest runs from the top of the connection's greenlet, once the
        # WSGI call stack has unwound (chat.transport.handler).
        websocket.reader = self._read_forever
        return []

    def _read_forever(self, websocket: LimitedWebSocket) -> None:
        """Read packets until the session or the connection ends.

        While the client has sent nothing, the websocket is parked
        (``LimitedWebSocket.park``) and this greenlet ends: an idle session
        holds no greenlet. The client's next bytes start this again in a
        new one.
        """
        receive = self.receive
        trigger = self.server._trigger_event
        run_async = self.server.async_handlers
        while not self.closed:
            if not websocket.ready_to_read():
                if self.ending:
                    break  # asked to end (``end``): nothing it sent is left
                websocket.park(self._read_forever)
                return
            data = websocket.receive()
            if data is None:
                break  # closed by the client, a limit or a server close
            self.handling = True
            # What the event answers goes out in one write (``hold``).
            websocket.hold()
            try:
                if data[:1] == "4" and data[1:2].isnumeric():
                    # A message carrying a socket.io packet, the usual
                    # frame: what ``receive`` does with its decoded packet
                    # (engine.io's decode keeps such a payload as sent).
                    trigger("message", self.sid, data[1:], run_async=run_async)
                else:
                    receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except (ValueError, IndexError, TypeError):
                websocket.close(1002)
                break
            except Exception:
                log.exception("error handling a websocket packet")
                break
            finally:
                self.handling = False
                websocket.release()
        try:
            self._reading_ended(websocket)
        finally:
            websocket.finish()

    def _reading_ended(self, websocket: LimitedWebSocket) -> None:
        """End the session of a websocket whose reading is over, then its
        TCP connection once what is queued for it is written."""
        reasons = self.server.reason
        # Cut by this server for breaking a limit or the protocol (a close
        # code from 1002 up), or ended by it: a server disconnect, not a
        # dropped connection whose user may come back.
        cut = self.ending or (websocket.close_code or 1000) >= 1002
        self.close(
            wait=False,
            abort=True,
            reason=reasons.SERVER_DISCONNECT if cut else reasons.TRANSPORT_CLOSE,
        )
        # What engine.io's connect handler did when its websocket loop ended.
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]
        websocket.close()
        websocket.drain(ENDING_GRACE_S)

    def _upgrade(self, websocket: LimitedWebSocket) -> bool:
        """The probe exchange of engine.io's upgrade; False when it fails."""
        probe = websocket.receive()
        if probe != "2probe":
            return False
        websocket.send("3probe")
        self.queue.put(packet.Packet(packet.NOOP))  # ends the pending poll
        return websocket.receive() == "5"

    def _go_direct(self, websocket: LimitedWebSocket) -> None:
        """Send what the queue holds, in order, then write directly.

        No send can block, so nothing is emitted between the last queued
        packet and the switch.
        """
        websocket.on_overflow = self._backlog_full
        queue = self.queue
        while queue.qsize():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is not None:
                websocket.write(packet_frame(pkt))
        self.direct = websocket
        # Nothing reads the queue from now on: it would only cost memory.
        self.queue = _NO_QUEUE
        if self.closed:
            websocket.close()

    def _backlog_full(self) -> None:
        """The client stopped reading: the server closes the session soon
        (not here: this runs in the greenlet that emitted)."""
        note = getattr(self.server, "note_overflow", None)
        if note is not None:
            note(self)
