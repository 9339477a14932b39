"""Kernel module selection: which ``.ko`` files the guest needs, in load order.

kestrel loads modules one by one with ``finit_module`` (no modprobe, no
modules.dep lookup in the guest), so the builder writes the list already in
dependency order: a module always comes after everything it depends on.
"""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

from volant.errors import ValidationError

# What kestrel needs at boot: virtio transports, net, block, vsock, the
# filesystems of the cloud-init seed (iso9660, vfat + its code pages) and ext4
# (built into Debian's cloud kernel, then simply absent here).
WANTED_MODULES: tuple[str, ...] = (
    "virtio_ring", "virtio", "virtio_mmio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
    "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk",
    "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
    "isofs", "fat", "vfat", "nls_cp437", "nls_ascii", "nls_utf8",
    "crc16", "mbcache", "jbd2", "crc32c_generic", "ext4",
)

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(relpath: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net`` (dashes folded like modprobe)."""
    base = relpath.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def uncompressed_relpath(relpath: str) -> str:
    for suffix in _SUFFIXES[:-1]:
        if relpath.endswith(suffix):
            return relpath[: -len(suffix)] + ".ko"
    return relpath


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """Parse depmod's ``modules.dep``: ``path: dep dep ...`` -> {path: [deps]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        deps[module.strip()] = rest.split()
    return deps


def load_order(deps: dict[str, list[str]], wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    """Relative paths of the wanted modules and their dependencies, dependencies first.

    Wanted names that are not modules (built into the kernel) are skipped.
    """
    by_name = {module_name(path): path for path in deps}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise ValidationError(f"dependency cycle through kernel module {path}")
        visiting.add(path)
        for dep in deps.get(path, []):
            visit(dep)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:
            visit(path)
    return order


def subset_modules_dep(deps: dict[str, list[str]], selected: list[str]) -> str:
    """A ``modules.dep`` for only the selected modules (paths made uncompressed)."""
    lines = []
    for path in selected:
        line_deps = " ".join(uncompressed_relpath(dep) for dep in deps.get(path, []))
        lines.append(f"{uncompressed_relpath(path)}: {line_deps}".rstrip())
    return "\n".join(lines) + "\n"


def read_module(path: Path) -> bytes:
    """Module bytes, decompressed when the package ships ``.ko.xz``/``.ko.zst``/``.ko.gz``."""
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        import gzip

        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        result = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False)
        if result.returncode != 0:
            raise ValidationError(f"cannot decompress {path}: {result.stderr.decode().strip()}")
        return result.stdout
    return path.read_bytes()
