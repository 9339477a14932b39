"""``DynamicSupervisor``: one_for_one supervision of children added at run time.

Used for VMs and deployments: the set of children is data, not code.  Children do
not survive a restart of the dynamic supervisor itself (as in OTP); whoever owns the
records (the VM actors' snapshots) re-adds them.
"""

from __future__ import annotations

import random
from typing import Any

from volant.actors.errors import ActorCrashed, ActorStopped
from volant.actors.mailbox import ActorRef
from volant.actors.spec import Backoff, ChildSpec, Strategy
from volant.actors.supervisor import EventHandler, Supervisor, _Child
from volant.errors import BackPressureError, ConflictError


class DynamicSupervisor(Supervisor):
    def __init__(
        self,
        name: str,
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff = Backoff(),
        on_event: EventHandler | None = None,
        max_children: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            name,
            (),
            strategy=Strategy.ONE_FOR_ONE,
            intensity=intensity,
            period=period,
            backoff=backoff,
            on_event=on_event,
            rng=rng,
        )
        self.max_children = max_children

    def __contains__(self, child_id: object) -> bool:
        return any(child.id == child_id for child in self._children)

    def __len__(self) -> int:
        return len(self._children)

    async def start_child(self, spec: ChildSpec) -> ActorRef[Any] | None:
        """Add and start a child; returns once it reported started.

        Returns its ``ActorRef`` (None for a non-actor child).  Raises ``ConflictError``
        for a duplicate id, ``BackPressureError`` at ``max_children``, ``ActorStopped``
        when this supervisor is not running, and ``ActorCrashed`` (cause: the original
        error) when the child failed before reporting started; it is then not added.
        """
        if self._nursery is None or self._stopping:
            raise ActorStopped(f"supervisor {self.name!r} is not running", supervisor=self.name)
        if spec.id in self:
            raise ConflictError(
                f"supervisor {self.name!r} already has a child {spec.id!r}", child=spec.id
            )
        if self.max_children is not None and len(self._children) >= self.max_children:
            raise BackPressureError(
                f"supervisor {self.name!r} is at its limit of {self.max_children} children",
                limit=self.max_children,
            )
        child = _Child(spec)
        self._children.append(child)
        started = False
        try:
            started = await self._start_child(child)
        finally:
            if not started and not child.removed:
                self._remove(child)
        if not started:
            run = child.run
            error = run.error if run is not None else None
            failure = ActorCrashed(
                f"child {spec.id!r} of {self.name!r} failed to start: {error!r}", child=spec.id
            )
            raise failure from error
        return ActorRef(child.mailbox) if child.mailbox is not None else None

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child (graceful request, then cancel after its timeout) and remove it."""
        child = self._find(child_id)
        child.removed = True  # from now on its exits are ours, not crashes
        if child.run is not None:
            child.run.stop_requested = True
        if child.restart_scope is not None:
            child.restart_scope.cancel()
        await self._stop_child(child)
        self._remove(child)

    def _retire(self, child: _Child) -> None:
        self._remove(child)

    def _remove(self, child: _Child) -> None:
        child.removed = True
        child.state = "terminated"
        if child in self._children:
            self._children.remove(child)
        if child.mailbox is not None:
            child.mailbox.close()

    def _prepare_run(self) -> None:
        self._after_run()
        super()._prepare_run()

    def _after_run(self) -> None:
        """Dynamic children do not outlive a run of their supervisor."""
        for child in list(self._children):
            self._remove(child)
