"""Daemon-wide facts every actor may read: are we shutting down, who are we."""

from __future__ import annotations

import attrs

from volant.runtime.base import instance_id_for

__all__ = ["DaemonLifecycle", "instance_id_for"]


@attrs.define
class DaemonLifecycle:
    instance_id: str
    #: Set when volantd itself stops: actors then leave VMMs and taps running
    #: (VMs outlive the control plane; the next start adopts them).
    detaching: bool = False
