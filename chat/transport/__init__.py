"""Bytes in and out of one connection, limits first: ``websocket`` (frames
and their ordered writer), ``handler`` (the HTTP request, the handshake, the
session a websocket belongs to), ``server`` (the WSGI server and its
per-client connection cap), ``headers`` (request header parsing),
``query`` (the query string, parsed only when it can hold what is asked),
``clientaddr`` (who a client is: an address, IPv6 by prefix), ``codec`` (the
JSON codec), ``workers`` (reused greenlets for short jobs started from the
loop: a parked websocket's reader, a new connection's handler)."""
