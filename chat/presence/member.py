"""One logged-in connection, and what a join or a leave tells the room."""

from __future__ import annotations

from dataclasses import dataclass

from chat.validation import name_key


@dataclass(frozen=True)
class Member:
    """One logged-in connection. ``token`` lets the same person reclaim the name."""

    sid: str
    room: str
    name: str
    token: str
    # The client brought its own token (the page does, the stock example
    # does not): only such a member can come back after a dropped
    # connection or a deploy, so only its name is held for it meanwhile.
    proven: bool = False

    @property
    def key(self) -> str:
        return name_key(self.name)

    def to_dict(self) -> dict:
        """``dataclasses.asdict``'s answer, without its deep copy of every
        field (a login encodes one; tests check that the two agree)."""
        return {
            "sid": self.sid,
            "room": self.room,
            "name": self.name,
            "token": self.token,
            "proven": self.proven,
        }


def presence_event(name: str, count: int, seq: int | None) -> dict:
    """The payload of ``user joined`` / ``user left``; ``seq`` only in a cluster."""
    payload = {"username": name, "numUsers": count}
    if seq is not None:
        payload["seq"] = seq
    return payload


@dataclass(frozen=True)
class JoinResult:
    """``ok`` False means the name is held by someone else.

    ``replaced_sid`` is the older connection of the same person (same token),
    whose entry this join took over: it must not be announced as a new user.
    """

    ok: bool
    count: int
    replaced_sid: str | None = None
    # The room's presence sequence after this join (cluster mode), so late
    # events can be told from current ones.
    seq: int | None = None
    # Who is in the room now, sorted, when it is small enough to list.
    names: list[str] | None = None
    # What the login's checks read in the same step (``checks`` given to
    # the join, on one Redis): (ban, moderators' entry, slow mode) as
    # stored, each None when absent. None when nothing was read (no
    # checks asked, or Redis did not answer).
    checked: tuple | None = None
