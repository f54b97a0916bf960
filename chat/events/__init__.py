"""The socket.io handlers of the chat's contract, thin: each checks its input
and budget, then hands the work to the stores (chat.presence,
chat.messages).

- ``context``: what every handler shares (the state, answers, refusals,
  the ``guarded`` decorator);
- ``connection``: connect and disconnect;
- ``login``: ``add user``;
- ``talk``: ``new message``, ``typing``, ``stop typing``, unknown events and
  handler failures;
- ``moderate``: a room moderator's actions.

Client -> server: ``add user``, ``new message``, ``typing``, ``stop typing``.
Server -> client: ``login``, ``new message``, ``user joined``, ``user left``,
``typing``, ``stop typing``; and the additions ``login error``, ``chat error``
and ``history``. Every refusal answers the sender and changes nothing else.
"""

from __future__ import annotations

from chat.events import connection, login, moderate, talk


def register(socketio) -> None:
    """Bind the handlers to the app's Flask-SocketIO object."""
    socketio.on_event("connect", connection.on_connect)
    socketio.on_event("disconnect", connection.on_disconnect)
    socketio.on_event("add user", login.on_add_user)
    socketio.on_event("new message", talk.on_new_message)
    socketio.on_event("typing", talk.on_typing)
    socketio.on_event("stop typing", talk.on_stop_typing)
    socketio.on_event("moderate", moderate.on_moderate)
    socketio.on_event("*", talk.on_unknown)
    socketio.on_error_default(talk.on_handler_error)
