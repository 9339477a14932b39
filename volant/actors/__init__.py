"""A generic actor runtime on trio: bounded mailboxes, ``ActorRef`` and OTP-style supervisors.

It knows nothing of VMs.  See ``docs/architecture.md`` ("Actor contract") for the rules.
"""

from volant.actors.actor import Actor
from volant.actors.dynamic import DynamicSupervisor
from volant.actors.errors import (
    ActorCrashed,
    ActorStopped,
    CallTimeout,
    MailboxFull,
    SupervisorEscalation,
)
from volant.actors.mailbox import ActorRef, Mailbox
from volant.actors.spec import (
    Backoff,
    ChildInfo,
    ChildSpec,
    Restart,
    Runnable,
    Strategy,
    SupervisorEvent,
    actor_child,
)
from volant.actors.supervisor import Supervisor

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorStopped",
    "Backoff",
    "CallTimeout",
    "ChildInfo",
    "ChildSpec",
    "DynamicSupervisor",
    "Mailbox",
    "MailboxFull",
    "Restart",
    "Runnable",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorEvent",
    "actor_child",
]
