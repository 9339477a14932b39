"""``Supervisor``: OTP-style supervision of an ordered list of children on trio.

One control task owns every decision (restart, escalate, shut down); each child
*run* is a task in the supervisor's nursery wrapped in its own cancel scope, so a
child can be cancelled alone when it ignores a graceful stop request.  Child exits
reach the control task through an unbounded internal channel, which means a child
crash never raises into the supervisor's nursery.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from volant.actors.actor import Actor, collapse_group
from volant.actors.errors import SupervisorEscalation
from volant.actors.mailbox import ActorRef, Mailbox
from volant.actors.spec import (
    Backoff,
    ChildInfo,
    ChildSpec,
    Restart,
    Runnable,
    Strategy,
    SupervisorEvent,
)
from volant.errors import NotFoundError, UnavailableError, ValidationError
from volant.logging import get_logger

EventHandler = Callable[[SupervisorEvent], None]

_NOT_RUNNING = frozenset({"pending", "terminated", "stopped"})


class _Run:
    """One incarnation of a child: the instance, its cancel scope and how it ended."""

    def __init__(self, instance: Runnable | None) -> None:
        self.instance = instance
        self.scope = trio.CancelScope()
        self.exited = trio.Event()
        self.started = False
        self.started_at: float | None = None
        self.error: BaseException | None = None
        self.killed = False
        self.stop_requested = False


class _Child:
    """A slot: the spec plus what survives restarts (mailbox, counters)."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = "pending"
        self.restart_count = 0
        self.consecutive = 0
        self.run: _Run | None = None
        self.mailbox: Mailbox[Any] | None = None
        self.restart_scope: trio.CancelScope | None = None
        self.removed = False

    @property
    def id(self) -> str:
        return self.spec.id


class _Exit:
    __slots__ = ("child", "run")

    def __init__(self, child: _Child, run: _Run) -> None:
        self.child = child
        self.run = run


_STOP = object()  # request_stop was called
_WAKE = object()  # a background restart finished: re-check "all started"


class _StartProbe:
    """The ``task_status`` handed to a child: marks it running, then reports upward."""

    def __init__(self, on_started: Callable[[], None], outer: trio.TaskStatus[None]) -> None:
        self._on_started = on_started
        self._outer = outer

    def started(self, value: object = None) -> None:
        self._on_started()
        self._outer.started()


class Supervisor:
    """Runs ``children`` in order and applies ``strategy`` when one exits.

    - restart types: ``PERMANENT`` always, ``TRANSIENT`` after an exception only,
      ``TEMPORARY`` never (not even when a sibling's crash stops it);
    - more than ``intensity`` restarts within ``period`` seconds: stop every child in
      reverse order and raise ``SupervisorEscalation`` to the parent;
    - ``backoff`` delays restarts of a child that keeps crashing;
    - start is ordered (each child reports started before the next is created) and
      shutdown is in reverse order: ``request_stop`` first, then a cancel after the
      child's ``shutdown_timeout``.

    A ``Supervisor`` object can be run again after it returned or escalated (so a
    parent's factory may return the same object): the child slots and their
    mailboxes, hence ``ActorRef`` objects handed out, survive that.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff = Backoff(),
        on_event: EventHandler | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if intensity < 0 or period <= 0:
            raise ValidationError("intensity must be >= 0 and period > 0", supervisor=name)
        ids = [spec.id for spec in children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValidationError(f"duplicate child ids: {duplicates}", supervisor=name)
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.backoff = backoff
        self._on_event = on_event
        self._rng = rng if rng is not None else random.Random()
        self._children: list[_Child] = [_Child(spec) for spec in children]
        self._inbox_send, self._inbox = trio.open_memory_channel[object](math.inf)
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._restarts: deque[float] = deque()
        self._restart_scopes: set[trio.CancelScope] = set()
        self._log = get_logger("volant.actors.supervisor", supervisor=name)

    # -- public API -------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} children={len(self._children)}>"

    @property
    def on_event(self) -> EventHandler | None:
        return self._on_event

    @on_event.setter
    def on_event(self, handler: EventHandler | None) -> None:
        """Settable after construction (the owner of the events may be built later)."""
        self._on_event = handler

    def request_stop(self) -> None:
        """Graceful: stop every child in reverse order, then ``run`` returns normally."""
        self._stopping = True
        for scope in list(self._restart_scopes):
            scope.cancel()
        self._inbox_send.send_nowait(_STOP)

    def ref(self, child_id: str) -> ActorRef[Any]:
        """The stable ``ActorRef`` of an actor child (valid across its restarts)."""
        child = self._find(child_id)
        if child.mailbox is None:
            if child.run is None:
                raise UnavailableError(
                    f"child {child_id!r} of {self.name!r} has not been started yet"
                )
            raise NotFoundError(f"child {child_id!r} of {self.name!r} is not an actor")
        return ActorRef(child.mailbox)

    def which_children(self) -> list[ChildInfo]:
        return [ChildInfo(c.id, c.state, c.restart_count) for c in self._children]

    # -- the run ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._prepare_run()
        reported = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._start_later(list(self._children), 0.0)
                reported = self._report_if_settled(task_status, reported)
                while not self._stopping:
                    item = await self._inbox.receive()
                    if item is _STOP:
                        break
                    if isinstance(item, _Exit):
                        await self._handle_exit(item)
                    reported = self._report_if_settled(task_status, reported)
                await self._shutdown_all()
                if not reported:
                    task_status.started()
        except BaseException as raised:
            error = collapse_group(raised)
            if error is raised:
                raise
            raise error from None
        finally:
            self._nursery = None
            self._stopping = False
            self._after_run()

    def _after_run(self) -> None:
        for child in self._children:
            child.state = "terminated"
            if child.mailbox is not None:
                child.mailbox.close()

    def _prepare_run(self) -> None:
        while True:  # drop leftovers of a previous run
            try:
                self._inbox.receive_nowait()
            except trio.WouldBlock:
                break
        self._restarts.clear()
        self._restart_scopes.clear()
        for child in self._children:
            child.state = "pending"
            child.run = None
            child.consecutive = 0
            child.restart_count = 0
            if child.mailbox is not None:
                child.mailbox.reopen()

    def _report_if_settled(self, task_status: trio.TaskStatus[None], reported: bool) -> bool:
        """Report "started" to our parent once every child that should run is running."""
        if reported:
            return True
        if any(c.state in ("pending", "starting", "restarting") for c in self._children):
            return False
        task_status.started()
        return True

    # -- starting ---------------------------------------------------------------------
    async def _start_later(self, group: list[_Child], delay: float) -> None:
        """Sleep ``delay`` then start ``group`` in order; ``request_stop`` interrupts it."""
        with trio.CancelScope() as scope:
            self._restart_scopes.add(scope)
            for child in group:
                child.restart_scope = scope
            try:
                if delay > 0:
                    await trio.sleep(delay)
                await self._start_group(group)
            finally:
                self._restart_scopes.discard(scope)
                for child in group:
                    if child.restart_scope is scope:
                        child.restart_scope = None
        self._inbox_send.send_nowait(_WAKE)

    async def _start_group(self, group: list[_Child]) -> None:
        for index, child in enumerate(group):
            if self._stopping:
                return
            if child.removed or child.state not in ("pending", "restarting"):
                continue
            if not await self._start_child(child):
                # Do not start dependants without their dependency: they wait as
                # "pending" and join the restart of the child that failed.  Only then
                # report the failure, so the control task sees them as pending.
                for later in group[index + 1 :]:
                    if later.state == "restarting":
                        later.state = "pending"
                assert child.run is not None
                self._inbox_send.send_nowait(_Exit(child, child.run))
                return

    async def _start_child(self, child: _Child) -> bool:
        """Create and start one instance; True once it reported started.

        A failure before "started" is *not* sent to the control task here: the caller
        reports it (``_start_group``) or turns it into an error (``start_child``).
        """
        if self._nursery is None:
            raise UnavailableError(f"supervisor {self.name!r} is not running")
        child.state = "starting"
        try:
            instance = child.spec.factory()
        except Exception as error:
            run = _Run(None)
            run.error = error
            child.run = run
            run.exited.set()
            return False
        if isinstance(instance, Actor):
            if child.mailbox is None:
                child.mailbox = Mailbox(child.id, instance.mailbox_size)
            instance.bind_mailbox(child.mailbox)
        run = _Run(instance)
        child.run = run
        await self._nursery.start(self._child_main, child, run)
        return run.started

    async def _child_main(
        self, child: _Child, run: _Run, *, task_status: trio.TaskStatus[None]
    ) -> None:
        def on_started() -> None:
            run.started = True
            run.started_at = trio.current_time()
            child.state = "running"
            self._emit("child_started", child)

        probe = _StartProbe(on_started, task_status)
        assert run.instance is not None
        try:
            try:
                with run.scope:
                    await run.instance.run(task_status=probe)
            except Exception as error:
                run.error = collapse_group(error)
            run.killed = run.scope.cancelled_caught
        finally:
            run.exited.set()
            if run.started:
                self._inbox_send.send_nowait(_Exit(child, run))
        if not run.started:
            task_status.started()

    # -- exits ------------------------------------------------------------------------
    async def _handle_exit(self, exit_: _Exit) -> None:
        child, run = exit_.child, exit_.run
        if run is not child.run or child.removed or run.stop_requested or self._stopping:
            return  # stale, or a stop we asked for (reported by _stop_child)
        error = run.error
        if error is not None:
            self._log.error(
                "child crashed",
                actor=child.id,
                error=repr(error),
                started=run.started,
                exc_info=error,
            )
            self._emit("child_crashed", child, error=repr(error))
        else:
            self._log.info("child exited", actor=child.id)
            self._emit("child_exited", child)

        position = self._children.index(child)
        pending_after = [c for c in self._children[position + 1 :] if c.state == "pending"]
        restart = child.spec.restart is Restart.PERMANENT or (
            child.spec.restart is Restart.TRANSIENT and error is not None
        )
        if not restart:
            self._retire(child)
            if pending_after:
                await self._schedule(pending_after, 0.0)
            return

        now = trio.current_time()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self.period:
            self._restarts.popleft()
        if len(self._restarts) > self.intensity:
            await self._escalate(child, error)

        if run.started_at is not None and now - run.started_at >= self.backoff.reset_after:
            child.consecutive = 0
        child.consecutive += 1
        delay = self.backoff.delay(child.consecutive, self._rng)

        affected = self._affected(child)
        for sibling in reversed(affected):
            if sibling is not child and sibling.state != "pending":
                await self._stop_child(sibling)
        group: list[_Child] = []
        for candidate in self._children:
            if candidate in affected:
                if candidate is not child and candidate.spec.restart is Restart.TEMPORARY:
                    self._retire(candidate)
                    continue
                group.append(candidate)
            elif candidate in pending_after:
                group.append(candidate)
        for member in group:
            if member.state != "pending":
                member.restart_count += 1
            member.state = "restarting"
            self._log.info("restarting child", actor=member.id, delay=delay, cause=child.id)
            self._emit("child_restarting", member, delay=delay)
        await self._schedule(group, delay)

    async def _schedule(self, group: list[_Child], delay: float) -> None:
        """one_for_one restarts run in the background (children are independent);
        the other strategies restart in the control task so groups never overlap."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            assert self._nursery is not None
            for member in group:
                member.state = "restarting"
            self._nursery.start_soon(self._start_later, group, delay)
        else:
            await self._start_later(group, delay)

    def _affected(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            candidates: Iterable[_Child] = self._children
        else:
            candidates = self._children[self._children.index(child) :]
        return [c for c in candidates if c is child or c.state not in ("terminated", "stopped")]

    def _retire(self, child: _Child) -> None:
        """The child will not run again under this run of the supervisor."""
        child.state = "terminated"
        if child.mailbox is not None:
            child.mailbox.close()

    async def _escalate(self, child: _Child, error: BaseException | None) -> None:
        self._log.error(
            "restart intensity exceeded, escalating",
            actor=child.id,
            intensity=self.intensity,
            period=self.period,
        )
        await self._shutdown_all()
        escalation = SupervisorEscalation(
            self.name, child=child.id, intensity=self.intensity, period=self.period
        )
        self._emit("escalated", child, error=str(escalation))
        raise escalation from error

    # -- stopping ---------------------------------------------------------------------
    async def _stop_child(self, child: _Child) -> None:
        """Graceful request, then a forced cancel after the child's shutdown timeout."""
        run = child.run
        if run is None or run.exited.is_set():
            if child.state not in ("terminated",):
                child.state = "stopped"
            return
        run.stop_requested = True
        child.state = "stopping"
        assert run.instance is not None
        try:
            run.instance.request_stop()
        except Exception as error:
            self._log.warning("request_stop failed", actor=child.id, error=repr(error))
        with trio.move_on_after(child.spec.shutdown_timeout):
            await run.exited.wait()
        forced = not run.exited.is_set()
        if forced:
            self._log.warning(
                "child ignored stop request, cancelling",
                actor=child.id,
                shutdown_timeout=child.spec.shutdown_timeout,
            )
            run.scope.cancel()
            await run.exited.wait()
        child.state = "stopped"
        reason = "killed after shutdown timeout" if forced else None
        if run.error is not None and not forced:
            reason = f"crashed while stopping: {run.error!r}"
        self._emit("child_terminated", child, error=reason)

    async def _shutdown_all(self) -> None:
        self._stopping = True
        for scope in list(self._restart_scopes):
            scope.cancel()
        for child in reversed(list(self._children)):
            await self._stop_child(child)

    # -- helpers ----------------------------------------------------------------------
    def _find(self, child_id: str) -> _Child:
        for child in self._children:
            if child.id == child_id:
                return child
        raise NotFoundError(f"supervisor {self.name!r} has no child {child_id!r}")

    def _emit(
        self, kind: str, child: _Child, *, error: str | None = None, delay: float = 0.0
    ) -> None:
        if self._on_event is None:
            return
        event = SupervisorEvent(
            kind=kind,
            supervisor=self.name,
            child=child.id,
            error=error,
            restart_count=child.restart_count,
            delay=delay,
        )
        try:
            self._on_event(event)
        except Exception as failure:
            self._log.error("on_event handler failed", kind=kind, error=repr(failure))
