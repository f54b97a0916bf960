"""``flask --app wsgi moderation …``: the operators' commands in a shell, on
the deployment's own settings (REDIS_URL), recorded like the API's.

    flask --app wsgi moderation ban Mallory --reason spam [--seconds N] [--room R]
    flask --app wsgi moderation ban --address 2001:db8::7 --reason flooding
    flask --app wsgi moderation unban Mallory [--room lobby]
    flask --app wsgi moderation bans
    flask --app wsgi moderation mute lobby Bob --reason "cool down" [--seconds 600]
    flask --app wsgi moderation delete lobby 1733400000000-0 --reason abuse
    flask --app wsgi moderation moderator lobby Mo [--remove]
    flask --app wsgi moderation slow lobby 30
    flask --app wsgi moderation audit [--count 50]
"""

from __future__ import annotations

import getpass
import json

import click
from flask import current_app
from flask.cli import AppGroup

from chat.messages.entries import is_entry_id
from chat.moderation import actions
from chat.transport.clientaddr import client_key
from chat.validation import Refused, clean_name, clean_room

moderation = AppGroup("moderation", help="Bans, mutes, deletions, moderators.")


def _state():
    return current_app.extensions["chat"]


def _by() -> str:
    return f"cli:{getpass.getuser()}"


def _checked(clean, value):
    try:
        return clean(value, 64)
    except Refused as refusal:
        raise click.BadParameter(refusal.detail) from None


def _done(result) -> None:
    """Print the result, once what the room must hear has gone out."""
    manager = current_app.extensions["socketio"].server.manager
    wait = getattr(manager, "wait_published", None)
    if wait is not None:
        wait(10)
    click.echo(json.dumps(result, ensure_ascii=False))


@moderation.command()
@click.argument("name", required=False)
@click.option("--address", help="a client address instead of a name")
@click.option("--reason", required=True)
@click.option("--seconds", type=click.IntRange(1), help="none: for good")
@click.option("--room", help="from this room only")
def ban(name, address, reason, seconds, room):
    """Ban a name (or --address) from the chat, or from one --room."""
    state = _state()
    if room:
        room, name = _checked(clean_room, room), _checked(clean_name, name)
        actions.ban_from_room(state, _by(), room, name, reason, seconds)
        return _done({"banned": {"room": room, "name": name}})
    if address:
        value = client_key(address, current_app.config["CLIENT_IPV6_PREFIX"])
        kind = "address"
    else:
        kind, value = "name", _checked(clean_name, name)
    state.moderation.ban(kind, value, _by(), reason, seconds)
    actions.record(state, _by(), "ban", kind=kind, value=value, reason=reason)
    _done({"banned": {"kind": kind, "value": value, "seconds": seconds}})


@moderation.command()
@click.argument("name", required=False)
@click.option("--address")
@click.option("--room")
def unban(name, address, room):
    """Lift a ban."""
    state = _state()
    if address:
        kind, value = (
            "address",
            client_key(address, current_app.config["CLIENT_IPV6_PREFIX"]),
        )
    else:
        kind, value = "name", _checked(clean_name, name)
    room = _checked(clean_room, room) if room else None
    removed = state.moderation.unban(kind, value, room=room)
    actions.record(state, _by(), "unban", kind=kind, value=value, room=room)
    _done({"unbanned": removed})


@moderation.command()
def bans():
    """List the bans in force."""
    _done({"bans": _state().moderation.bans()})


@moderation.command()
@click.argument("room")
@click.argument("name")
@click.option("--reason", required=True)
@click.option("--seconds", type=click.IntRange(1), default=600, show_default=True)
def mute(room, name, reason, seconds):
    """Mute NAME in ROOM: they still read."""
    room, name = _checked(clean_room, room), _checked(clean_name, name)
    actions.mute(_state(), _by(), room, name, reason, seconds)
    _done({"muted": {"room": room, "name": name, "seconds": seconds}})


@moderation.command()
@click.argument("room")
@click.argument("entry_id")
@click.option("--reason", required=True)
def delete(room, entry_id, reason):
    """Delete a message from every page and from history."""
    if not is_entry_id(entry_id):
        raise click.BadParameter("not a message id")
    room = _checked(clean_room, room)
    _done({"deleted": actions.delete(_state(), _by(), room, entry_id, reason)})


@moderation.command()
@click.argument("room")
@click.argument("name")
@click.option("--remove", is_flag=True)
def moderator(room, name, remove):
    """Make NAME a moderator of ROOM (or --remove)."""
    room, name = _checked(clean_room, room), _checked(clean_name, name)
    state = _state()
    if remove:
        removed = state.moderation.remove_moderator(room, name)
        actions.record(state, _by(), "not moderator", room=room, name=name)
        return _done({"removed": removed})
    if not actions.make_moderator(state, _by(), room, name):
        raise click.ClickException(f"{name} must be logged in to {room} first")
    _done({"moderator": {"room": room, "name": name}})


@moderation.command()
@click.argument("room")
@click.argument("seconds", type=click.IntRange(0, 3600))
def slow(room, seconds):
    """Slow mode in ROOM: one message every SECONDS per user (0: off)."""
    room = _checked(clean_room, room)
    actions.set_slow(_state(), _by(), room, seconds)
    _done({"slow": {"room": room, "seconds": seconds}})


@moderation.command()
@click.option("--count", type=click.IntRange(1, 1000), default=50, show_default=True)
def audit(count):
    """Who did what, newest last."""
    _done({"audit": _state().moderation.audit(count)})
