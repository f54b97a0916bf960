"""What one client holds open at a time: connections (the WSGI server) and
sessions (engine.io), each counted per client key (``chat.transport.clientaddr``:
an address, an IPv6 client by its prefix)."""

from __future__ import annotations


class OpenCounts:
    """Open things per client; a client with none is not kept."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def __getitem__(self, client: str) -> int:
        return self._open.get(client, 0)

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, client: str) -> None:
        self._open[client] = self._open.get(client, 0) + 1

    def closed(self, client: str) -> None:
        left = self._open.get(client, 1) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)
