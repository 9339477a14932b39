"""The bounded mailbox and the ``ActorRef`` handle that senders hold.

A mailbox belongs to a *slot* (a supervisor's child entry, or a standalone actor),
not to one actor instance: a restarted instance keeps reading the same mailbox, so
messages queued during a crash are handled after the restart and an ``ActorRef``
stays valid (as in Akka).  Only when the slot is terminated for good is the
mailbox closed; every message still queued then fails with ``ActorStopped``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Generic, TypeVar

import trio

from volant.actors.errors import ActorStopped, CallTimeout, MailboxFull
from volant.actors.timeouts import expire_at

Msg = TypeVar("Msg")

WAKE_UP: Any = object()  # a marker message: wakes an idle actor loop to see a stop request


class Reply:
    """A one-shot slot the actor fills with a result or an error for a waiting ``call``."""

    __slots__ = ("_error", "_event", "_value", "actor", "done", "timeout")

    def __init__(self, actor: str = "", timeout: float = math.inf) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.done = False
        self.actor = actor
        self.timeout = timeout

    def succeed(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self._error = error
            self._event.set()

    def expire(self) -> None:
        self.fail(
            CallTimeout(
                f"actor {self.actor!r} did not reply within {self.timeout:g}s",
                actor=self.actor,
                timeout=self.timeout,
            )
        )

    async def wait(self) -> None:
        await self._event.wait()

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class Envelope(Generic[Msg]):
    """A message plus, for ``call``, where its reply goes."""

    __slots__ = ("msg", "reply")

    def __init__(self, msg: Msg, reply: Reply | None) -> None:
        self.msg = msg
        self.reply = reply


class Mailbox(Generic[Msg]):
    """A bounded trio memory channel that can be closed for good and reopened.

    Reopening (a supervisor that is itself restarted) installs a fresh channel behind
    the same object, so ``ActorRef`` objects handed out earlier keep working.
    """

    def __init__(self, name: str, size: int) -> None:
        if size < 0 or (size != math.inf and int(size) != size):
            raise ValueError(f"mailbox size must be a non-negative integer, got {size!r}")
        self.name = name
        self.size = size
        self.alive = False
        self._open_channel()

    def _open_channel(self) -> None:
        send, receive = trio.open_memory_channel[Envelope[Msg]](self.size)
        self._send = send
        self._receive = receive
        self.closed = False

    def reopen(self) -> None:
        if self.closed:
            self._open_channel()

    @property
    def depth(self) -> int:  # a pending wake-up marker may count for a moment
        return self._receive.statistics().current_buffer_used

    def put(self, envelope: Envelope[Msg]) -> None:
        try:
            self._send.send_nowait(envelope)
        except trio.WouldBlock:
            raise MailboxFull(
                f"actor {self.name!r}: mailbox full ({self.size} messages)",
                actor=self.name,
                size=self.size,
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"actor {self.name!r} is stopped", actor=self.name) from None

    def wake(self) -> None:
        """Nudge a loop blocked in ``get``; harmless if it is already awake (then the
        buffer may be full and the marker is dropped, the loop checks its flag anyway)."""
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._send.send_nowait(Envelope(WAKE_UP, None))

    async def get(self) -> Envelope[Msg]:
        """Next message; raises ``trio.EndOfChannel`` once the mailbox is closed."""
        try:
            return await self._receive.receive()
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None

    def close(self) -> None:
        """Close for good: refuse new messages and fail every queued ``call``."""
        if self.closed:
            return
        self.closed = True
        self.alive = False
        self._send.close()
        while True:
            try:
                envelope = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if envelope.reply is not None:
                envelope.reply.fail(
                    ActorStopped(f"actor {self.name!r} stopped before handling the message")
                )
        self._receive.close()


class ActorRef(Generic[Msg]):
    """What other code holds to talk to an actor; stable across the actor's restarts."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox[Msg]) -> None:
        self._mailbox = mailbox

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} alive={self.alive} depth={self.mailbox_depth}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._mailbox is self._mailbox

    def __hash__(self) -> int:
        return id(self._mailbox)

    @property
    def name(self) -> str:
        return self._mailbox.name

    @property
    def alive(self) -> bool:
        """True while an instance is running its message loop (not starting/restarting)."""
        return self._mailbox.alive and not self._mailbox.closed

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting; for metrics and load shedding."""
        return 0 if self._mailbox.closed else self._mailbox.depth

    def cast(self, msg: Msg) -> None:
        """Fire and forget. Raises ``MailboxFull`` or ``ActorStopped``; never blocks."""
        self._mailbox.put(Envelope(msg, None))

    async def call(self, msg: Msg, timeout: float = 5.0) -> Any:
        """Send ``msg`` and wait for the reply (``handle``'s return value).

        Raises ``MailboxFull`` at once when the mailbox is full, ``CallTimeout`` when no
        reply came within ``timeout`` seconds (waiting through a restart counts), the
        ``VolantError`` the handler raised, ``ActorCrashed`` if the actor crashed on this
        message, or ``ActorStopped`` if it was terminated before answering.
        """
        reply = Reply(self._mailbox.name, timeout)
        self._mailbox.put(Envelope(msg, reply))
        expire_at(trio.current_time() + timeout, reply)
        await reply.wait()
        return reply.result()
