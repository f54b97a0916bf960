"""Every override of a library's internals, one module per concern.

- ``engineio_socket``: engine.io's socket writing websocket frames directly,
  pinging from a timer.
- ``engineio_server``: engine.io's server with per-client session caps,
  connect deadlines and bounded send queues.
- ``socketio_server``: socket.io's server refusing reserved and binary
  events, budgeting packets; ``install`` puts both servers in place.
- ``emit``: the manager's broadcast loop, a frame built once per message.
- ``flask_context``: Flask-SocketIO's event handling with a short Flask
  context when no teardown function or signal receiver would miss it.
- ``pubsub``: redis-py's pub/sub with a lean ``listen`` that makes
  published messages itself.
- ``redis_pool``: redis-py's connection pools, checking a connection for
  unread data with the OS's poll rather than a trip through gevent's hub.
- ``pins``: the versions all of these were written for.

The websocket and handler overrides live with the transport
(chat.transport), the Redis manager's with the cluster (chat.cluster); their
versions are pinned here too.
"""
