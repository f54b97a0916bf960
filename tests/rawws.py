"""A raw websocket client for attack tests: it sends whatever frames it is told.

Real socket.io clients refuse to send what an attacker sends (huge declared
lengths, endless fragments, reserved events); this one speaks just enough
RFC 6455 and engine.io to open a session and then misbehave.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import time


class RawWebSocket:
    """One TCP connection upgraded to a websocket, from ``source`` (127.0.0.0/8)."""

    opened: list[RawWebSocket] = []

    def __init__(
        self,
        port: int,
        path: str = "/socket.io/?EIO=4&transport=websocket",
        source: str = "127.0.0.1",
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket()
        self.opened.append(self)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self._buf = b""
        head = self._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(f"no websocket upgrade: {head[:100]!r}")

    # -- bytes ---------------------------------------------------------------
    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    # -- frames --------------------------------------------------------------
    @staticmethod
    def frame(
        payload: bytes, opcode: int = 1, fin: bool = True, length: int | None = None
    ) -> bytes:
        """A masked client frame; ``length`` may lie about the payload's size."""
        length = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | opcode])
        if length < 126:
            head += bytes([0x80 | length])
        elif length <= 0xFFFF:
            head += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + body

    def send_frame(self, payload: bytes, **kwargs) -> None:
        self.sock.sendall(self.frame(payload, **kwargs))

    def send_text(self, text: str) -> None:
        self.send_frame(text.encode())

    def recv_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def recv_text(self) -> str:
        """The next text message, answering engine.io pings on the way."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 8:
                raise EOFError(f"closed {self.close_code_of(payload)}")
            text = payload.decode()
            if text == "2":
                self.send_text("3")
                continue
            return text

    @staticmethod
    def close_code_of(payload: bytes) -> int | None:
        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code, or None for a bare EOF."""
        deadline = time.monotonic() + timeout
        code = None
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                opcode, payload = self.recv_frame()
            except (EOFError, ConnectionError):
                return code
            except TimeoutError:
                break
            if opcode == 8:
                code = self.close_code_of(payload)
        raise AssertionError(f"the server did not close the connection in {timeout}s")

    # -- engine.io / socket.io ---------------------------------------------------
    def open_session(self, auth: dict | None = None) -> str:
        """engine.io OPEN, socket.io CONNECT (with ``auth``); the socket.io sid."""
        import json

        assert self.recv_text().startswith("0")
        self.send_text("40" + (json.dumps(auth) if auth else ""))
        reply = self.recv_text()
        assert reply.startswith("40"), reply
        return json.loads(reply[2:])["sid"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
