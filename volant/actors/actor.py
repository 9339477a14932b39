"""``Actor``: one trio task running a message loop over a bounded mailbox."""

from __future__ import annotations

from typing import Any, ClassVar, Generic

import trio

from volant.actors.errors import ActorCrashed, ActorStopped
from volant.actors.mailbox import WAKE_UP, ActorRef, Envelope, Mailbox, Msg
from volant.errors import VolantError
from volant.logging import get_logger


def collapse_group(exc: BaseException) -> BaseException:
    """Unwrap single-exception groups that trio's strict nurseries add.

    A crash then surfaces as the error the code raised (``KeyError``), not as an
    ``ExceptionGroup`` nested three deep, which keeps logs and ``ActorCrashed`` readable.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


class Actor(Generic[Msg]):
    """Subclass and override ``handle``; the runtime runs one loop task per instance.

    - ``handle``'s return value is the reply to ``call`` (discarded for ``cast``).
    - A ``VolantError`` raised by ``handle`` is a domain answer: it goes to the caller
      and the actor keeps running.  Any other exception crashes the actor: the caller
      of that message gets ``ActorCrashed`` and the supervisor applies its policy.
    - ``self.nursery`` hosts helper tasks that live and die with the actor; a helper
      that raises crashes the actor.
    - ``on_start`` runs before the actor reports "started" (so a supervisor starts the
      next sibling only once this one is ready); ``on_stop`` runs after a graceful stop
      (``request_stop``/``stop_self``), not after a crash or a forced cancel.
    """

    mailbox_size: ClassVar[int] = 64

    _mailbox: Mailbox[Msg] | None = None
    _owns_mailbox: bool = False
    _stop_requested: bool = False
    _idle: bool = False
    _current: Envelope[Msg] | None = None
    nursery: trio.Nursery

    # -- hooks -----------------------------------------------------------------------
    async def on_start(self) -> None:
        """Initialise; raising here is a crash at start."""

    async def handle(self, msg: Msg) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.handle")

    async def on_stop(self) -> None:
        """Graceful cleanup after the loop ended normally."""

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._ensure_mailbox().name

    @property
    def ref(self) -> ActorRef[Msg]:
        """The handle others use; set up by the runtime (or lazily when run standalone)."""
        return ActorRef(self._ensure_mailbox())

    def bind_mailbox(self, mailbox: Mailbox[Msg]) -> None:
        """Used by supervisors: read from the slot's mailbox, which outlives this instance."""
        self._mailbox = mailbox
        self._owns_mailbox = False

    def _ensure_mailbox(self) -> Mailbox[Msg]:
        if self._mailbox is None:
            self._mailbox = Mailbox(type(self).__name__, self.mailbox_size)
            self._owns_mailbox = True
        return self._mailbox

    # -- stopping ----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful stop: finish the current message, run ``on_stop``, return normally."""
        self._stop_requested = True
        if self._idle and self._mailbox is not None:
            # Wake the idle loop with a marker message rather than a cancel scope per
            # receive: that would cost a third of the call throughput.
            self._mailbox.wake()

    def stop_self(self) -> None:
        """From inside ``handle``: end normally after this message (a normal exit)."""
        self.request_stop()

    # -- the loop ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        mailbox = self._ensure_mailbox()
        if self._owns_mailbox:
            mailbox.reopen()
        log = get_logger("volant.actors", actor=mailbox.name)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self.on_start()
                mailbox.alive = True
                task_status.started()
                await self._loop(mailbox, log)
                mailbox.alive = False
                await self.on_stop()
                nursery.cancel_scope.cancel()
        except BaseException as raised:
            error = collapse_group(raised)
            current, self._current = self._current, None
            if current is not None and current.reply is not None:
                if is_cancellation(error):
                    current.reply.fail(ActorStopped(f"actor {mailbox.name!r} was stopped"))
                else:
                    crashed = ActorCrashed(
                        f"actor {mailbox.name!r} crashed: {error!r}", actor=mailbox.name
                    )
                    crashed.__cause__ = error
                    current.reply.fail(crashed)
            if error is raised:
                raise
            raise error from None
        finally:
            mailbox.alive = False
            if self._owns_mailbox:
                mailbox.close()

    async def _loop(self, mailbox: Mailbox[Msg], log: Any) -> None:
        while not self._stop_requested:
            self._idle = True
            try:
                envelope = await mailbox.get()
            except trio.EndOfChannel:
                return
            finally:
                self._idle = False
            if envelope.msg is WAKE_UP:
                continue  # request_stop woke us; the loop condition decides
            self._current = envelope
            try:
                result = await self.handle(envelope.msg)
            except VolantError as error:
                self._current = None
                if envelope.reply is not None:
                    envelope.reply.fail(error)
                else:
                    log.warning("cast failed", error=str(error), error_type=type(error).__name__)
            else:
                self._current = None
                if envelope.reply is not None:
                    envelope.reply.succeed(result)
