"""Daemon-wide facts every actor may read: are we shutting down, who are we."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs


def instance_id_for(state_dir: Path) -> str:
    """A stable id of this volantd installation, put in every VMM's marker.

    Derived from the state directory, so two daemons with different state
    directories on one host never adopt or sweep each other's VMMs.
    """
    return hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:12]


@attrs.define
class DaemonLifecycle:
    instance_id: str
    #: Set when volantd itself stops: actors then leave VMMs and taps running
    #: (VMs outlive the control plane; the next start adopts them).
    detaching: bool = False
