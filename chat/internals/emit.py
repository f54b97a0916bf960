"""The broadcast loop of python-socketio's manager, doing the least per recipient."""

from __future__ import annotations

import time

import socketio
from engineio import packet
from socketio import packet as sio_packet

from chat.internals.engineio_socket import packet_frame
from chat.internals.rooms import RoomIndex


class FastEmitManager(RoomIndex, socketio.Manager):
    """``Manager.emit`` with a broadcast loop that does the least per recipient.

    python-socketio's loop goes through a generator, ``_send_eio_packet``,
    engine.io's ``send_packet`` and ``_get_socket`` for each recipient. Here
    the packet is encoded and framed once, and each websocket recipient
    costs a dictionary lookup and one ``send_now`` (``write`` while the
    recipient's own event holds frames); polling recipients get
    ``ChatSocket.send``. Callbacks, several rooms at once and binary
    payloads take python-socketio's own path. Subclass it behind a pub/sub
    manager (``class M(socketio.RedisManager, FastEmitManager)``) so that
    deliveries from other instances take this loop too.

    Its rooms are indexed by session (``RoomIndex``): a disconnect leaves
    the session's rooms without testing everyone's.
    """

    def ensure_room(self, room: str) -> None:
        """One instance hears every room: nothing to subscribe to."""

    def emit(
        self,
        event,
        data,
        namespace,
        room=None,
        skip_sid=None,
        callback=None,
        to=None,
        **kwargs,
    ):
        room = to or room
        members = self.rooms.get(namespace, {}).get(room)
        if callback is not None or not isinstance(room, (str, type(None))):
            return super().emit(
                event, data, namespace, room, skip_sid, callback, **kwargs
            )
        if not members:
            return None
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *data]
        ).encode()
        if isinstance(encoded, list):  # binary attachments
            return super().emit(
                event, data, namespace, room, skip_sid, callback, **kwargs
            )
        eio_pkt = packet.Packet(packet.MESSAGE, encoded)
        frame = packet_frame(eio_pkt)
        skip = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        sockets = self.server.eio.sockets
        gone_before = time.time() - self.server.eio.ping_timeout
        # A copy: a write can end a session, which leaves its rooms.
        for sid, eio_sid in members._fwdm.copy().items():
            if sid in skip:
                continue
            sock = sockets.get(eio_sid)
            if sock is None:
                # Not an engine.io socket of this server (Flask-SocketIO's
                # test client hooks in here): the server's own path.
                self.server._send_eio_packet(eio_sid, eio_pkt)
                continue
            if sock.closed:
                continue
            direct = sock.direct
            if direct is None:
                sock.send(eio_pkt)
            elif not sock.last_ping or sock.last_ping > gone_before:
                if direct.holder is None and not direct.closed:
                    direct.send_now(frame)  # nothing held to keep order with
                else:
                    direct.write(frame)
        return None
