"""Scripts from concurrent greenlets sent to Redis together.

A login, a message and a leave each run one short script. Sent one by
one, every call pays redis-py's whole path: a connection checked out of
the pool and checked for unread data, the command packed, a system call
each way, a hub switch to wait, the connection given back. Measured on
this machine, 25 greenlets each running a script cost 100-120 µs of the
instance's CPU per call; the same 25 on one pipeline, 12-17 µs.

``ScriptBatcher`` is the pipeline shared by concurrent callers: a call
queues its ``EVALSHA`` and waits; one flusher greenlet sends everything
queued in one write (``chat.cluster.wire.send_all``), hands every caller
its own reply (or its own error), and sends what queued meanwhile as the
next. Nothing waits for a batch to fill: with one caller the script goes
out on the next loop turn, as before; under load the batches grow by
themselves, while the previous one is in flight. Commands reach Redis in
the order they were called.

Each call keeps the guarantees of a single command: the same client with
its timeouts and retries, an error in one script is that caller's alone, a
script Redis has forgotten (a restart, a failover) is loaded and run again
for that caller, and a batch Redis does not answer in time fails every
caller in it, as one command would. What waits is bounded: past
``max_waiting`` queued calls a call fails at once, like an exhausted pool.
"""

from __future__ import annotations

import redis
from gevent.event import AsyncResult
from redis.commands.core import Script

from chat.cluster.wire import send_all
from chat.observe import metrics
from chat.transport.workers import start_soon

# More than the logins an instance lets in at once (LOGINS_IN_FLIGHT) plus
# their leaves and messages; a call past it means Redis is not keeping up.
MAX_WAITING = 4096
# Per pipeline: a burst larger than this goes in several, one after another.
MAX_BATCH = 256


class ScriptBatcher:
    """Concurrent ``Script`` calls on ``client`` sent as shared pipelines."""

    def __init__(
        self,
        client: redis.Redis,
        max_waiting: int = MAX_WAITING,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._client = client
        self._max_waiting = max_waiting
        self._max_batch = max_batch
        self._waiting: list[tuple[Script, list, list, AsyncResult]] = []
        # Whether a flusher runs (in a chat.transport.workers greenlet).
        self._flusher = False
        self.batches = 0  # pipelines sent by this one

    def __call__(self, script: Script, keys: list, args: list):
        """``script(keys=keys, args=args)``, sent with whatever else is queued."""
        if len(self._waiting) >= self._max_waiting:
            raise redis.ConnectionError(
                f"{self._max_waiting} Redis scripts already waiting to be sent"
            )
        reply = AsyncResult()
        self._waiting.append((script, keys, args, reply))
        if not self._flusher:
            self._flusher = True
            start_soon(self._flush)
        answer = reply.get()
        if isinstance(answer, redis.exceptions.NoScriptError):
            # It did not run: load it and run it again, for this caller.
            return script(keys=keys, args=args, client=self._client)
        return answer

    def _flush(self) -> None:
        """Send what is queued, batch after batch, until nothing is."""
        batch: list = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                self._send(batch)
                batch = []
        except BaseException as exc:  # nobody may wait forever
            for *_, reply in batch + self._waiting:
                reply.set_exception(exc)
            self._waiting.clear()
            raise
        finally:
            self._flusher = False

    def _send(self, batch: list) -> None:
        commands = [
            ("EVALSHA", script.sha, len(keys), *keys, *args)
            for script, keys, args, _ in batch
        ]
        self.batches += 1
        metrics.SCRIPT_BATCHES.inc()
        metrics.SCRIPTS_BATCHED.inc(len(batch))
        try:
            answers = send_all(self._client, commands)
        except redis.RedisError as exc:
            for *_, reply in batch:
                reply.set_exception(exc)
            return
        for (*_, reply), answer in zip(batch, answers, strict=True):
            if isinstance(answer, redis.exceptions.NoScriptError):
                reply.set(answer)  # the caller loads it (see __call__)
            elif isinstance(answer, Exception):
                reply.set_exception(answer)
            else:
                reply.set(answer)
