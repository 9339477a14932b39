"""Turning a create-VM body into a ``CreateVM`` message: parse, resolve, fetch media.

Shared by the VM route and by deployments, so both create VMs by the same rules.
Everything that can fail on bad input fails here, before anything is persisted.
"""

from __future__ import annotations

from typing import Any

from volant.actors import ActorRef
from volant.media import MediaCache
from volant.orchestrator.plugins import Resolve
from volant.orchestrator.vmrequest import parse_create, resolve
from volant.orchestrator.vms import CreateVM

AGENT_INITRAMFS_LABEL = "volant.initramfs"
AGENT_INITRAMFS_CHECKSUM = "volant.initramfs_checksum"


async def prepare_create(body: dict[str, Any], plugins: ActorRef[Any], media: MediaCache,
                         deployment: str = "") -> CreateVM:
    request = parse_create(body)
    manifest = await plugins.call(Resolve(request.plugin), timeout=30)
    resolved = resolve(request, manifest)
    initramfs = rootfs = ""
    if manifest.initramfs is not None and manifest.initramfs.url:
        initramfs = str(await media.ensure(manifest.initramfs.url, manifest.initramfs.checksum,
                                           "initramfs"))
    elif manifest.labels.get(AGENT_INITRAMFS_LABEL):
        # A rootfs image built by volant-image boots through kestrel's initramfs, which
        # switch_roots into the disk; the schema allows only one of rootfs/initramfs, so
        # the builder names that initramfs in a label.
        initramfs = str(await media.ensure(manifest.labels[AGENT_INITRAMFS_LABEL],
                                           manifest.labels.get(AGENT_INITRAMFS_CHECKSUM, ""),
                                           "initramfs"))
    if manifest.rootfs is not None and manifest.rootfs.url:
        rootfs = str(await media.ensure(manifest.rootfs.url, manifest.rootfs.checksum,
                                        "rootfs"))
    return CreateVM(resolved, initramfs, rootfs, deployment)
