"""``volant-image build``: a fledge.toml in, boot media and a plugin manifest out.

Assembly order (later layers win): [source] tree (rootfs only) -> base userland
(busybox + python3.11) -> kestrel -> kernel modules + load list -> /init ->
user mappings.  The initramfs is written by our own cpio writer; the rootfs
through ``mke2fs -d``.  Every timestamp is ``SOURCE_DATE_EPOCH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from volant.errors import ValidationError
from volant.images import base, cpio, ext4, kernel, kmods
from volant.images.fledge import BuildSpec, Mapping, load_spec
from volant.images.layout import Layout
from volant.images.plugin_manifest import build_manifest, sha256_checksum

KESTREL_GUEST_DIR = "/usr/lib/python3/dist-packages/kestrel"
MODULES_LIST = "/etc/kestrel/modules"
# What python3 runs as PID 1 (kestrel.pid1.PYTHON_ARGV says the same for switch_root).
_KESTREL_MAIN = ("import sys; sys.path.append('/usr/lib/python3/dist-packages'); "
                 "from kestrel.main import main; sys.exit(main())")
INIT_SCRIPT = f"""#!/bin/busybox sh
# PID 1 hands over to kestrel at once; kestrel mounts, loads modules and configures the network.
# -S skips site (and Debian's sitecustomize), -c skips runpy (what -m costs): under TCG every
# module run for the first time is boot time. kestrel's directory goes on sys.path by hand.
[ -e /proc/self ] || /bin/busybox mount -t proc proc /proc
exec /usr/bin/python3 -X frozen_modules=on -I -S -c "{_KESTREL_MAIN}"
"""
# Guest directories that must exist before kestrel mounts anything on them.
STANDARD_DIRS: tuple[tuple[str, int], ...] = (
    ("/dev", 0o755), ("/proc", 0o555), ("/sys", 0o555), ("/run", 0o755), ("/tmp", 0o1777),
    ("/mnt", 0o755), ("/root", 0o700), ("/var", 0o755), ("/var/tmp", 0o1777), ("/etc", 0o755),
    ("/etc/kestrel", 0o755), ("/usr/local/bin", 0o755),
)
DEVICE_NODES: tuple[tuple[str, int, int, int], ...] = (
    ("/dev/console", 5, 1, 0o600), ("/dev/null", 1, 3, 0o666), ("/dev/zero", 1, 5, 0o666),
    ("/dev/random", 1, 8, 0o666), ("/dev/urandom", 1, 9, 0o666), ("/dev/tty", 5, 0, 0o666),
    ("/dev/ttyS0", 4, 64, 0o600),
)
EXEC_DIR_NAMES = frozenset({"bin", "sbin"})


@dataclass(frozen=True)
class BuildResult:
    name: str
    strategy: str
    artifact: Path  # .cpio.gz (initramfs) or .img (rootfs)
    manifest: Path
    initramfs: Path | None  # the kestrel initramfs that boots a rootfs image
    kernel: kernel.KernelArtifacts
    warnings: tuple[str, ...] = ()


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        epoch = int(value)
    except ValueError:
        raise ValidationError(f"SOURCE_DATE_EPOCH must be an integer, got {value!r}") from None
    if epoch < 0:
        raise ValidationError("SOURCE_DATE_EPOCH must be >= 0")
    return epoch


def repo_kestrel_dir() -> Path:
    spec = importlib.util.find_spec("kestrel")
    if spec is None or not spec.submodule_search_locations:
        raise ValidationError("the kestrel package is not importable; give [agent] path")
    return Path(next(iter(spec.submodule_search_locations)))


def select_kernel(cache: Path, version: str | None) -> kernel.KernelArtifacts:
    if version is None:
        return kernel.ensure_kernel(cache)
    found = kernel.cached(cache, version)
    if found is not None:
        return found
    if kernel.release_of(kernel.resolve_kernel_package()) == version:
        return kernel.ensure_kernel(cache)
    raise ValidationError(
        f"kernel {version} is not in the cache {cache} and is not apt's current cloud kernel")


def build(spec_path: Path, output_dir: Path, *, cache: Path,
          kernel_version: str | None = None) -> BuildResult:
    spec = load_spec(spec_path)
    mtime = source_date_epoch()
    kernel_artifacts = select_kernel(cache, kernel_version)
    base_tree = base.ensure_base(cache)
    output_dir = output_dir.absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    kestrel_dir = spec.agent_path or repo_kestrel_dir()

    with _compiled_overlay(base_tree, kestrel_dir, spec.mappings) as overlay:
        agent_layout = guest_layout(base_tree, kernel_artifacts, overlay, spec, with_workload=False)
        full_layout = guest_layout(base_tree, kernel_artifacts, overlay, spec, with_workload=True)
        initramfs: Path | None = None
        if spec.strategy == "initramfs":
            artifact = output_dir / f"{spec.name}.cpio.gz"
            _atomic(artifact, lambda tmp: cpio.write_gzip_newc(full_layout, tmp, mtime))
            kind, labels = "initramfs", {}
        else:
            artifact = output_dir / f"{spec.name}.img"
            _atomic(artifact, lambda tmp: ext4.make_ext4(
                full_layout, tmp, size_buffer_mb=spec.size_buffer_mb, mtime=mtime,
                identity=f"{spec.name}:{spec.manifest['version']}"))
            initramfs = output_dir / f"{spec.name}.kestrel.cpio.gz"
            _atomic(initramfs, lambda tmp: cpio.write_gzip_newc(agent_layout, tmp, mtime))
            kind = "rootfs"
            # The upstream schema allows only one of rootfs/initramfs; the initramfs that
            # switch_roots into the disk travels in labels.
            labels = {"volant.initramfs": str(initramfs),
                      "volant.initramfs_checksum": sha256_checksum(initramfs)}

    manifest = build_manifest(spec, artifact=artifact, kind=kind, output_dir=output_dir,
                              extra_labels=labels)
    manifest_path = output_dir / f"{spec.name}.manifest.json"
    _atomic(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return BuildResult(spec.name, spec.strategy, artifact, manifest_path, initramfs,
                       kernel_artifacts, spec.warnings)


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary sibling so a failed build never leaves a partial artifact."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        write(tmp)
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def _compiled_overlay(base_tree: Path, kestrel_dir: Path,
                      mappings: tuple[Mapping, ...]) -> Iterator[tuple[Path, Path]]:
    """Stage kestrel and the mappings at their guest paths and precompile them.

    Yields (agent_root, workload_root): two host directories mirroring the guest root.
    """
    with tempfile.TemporaryDirectory(prefix="volant-image-") as tmp:
        agent_root = Path(tmp) / "agent"
        workload_root = Path(tmp) / "workload"
        shutil.copytree(kestrel_dir, agent_root / KESTREL_GUEST_DIR.lstrip("/"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        workload_root.mkdir()
        for mapping in mappings:
            _stage_mapping(mapping, workload_root)
        base.compile_python(agent_root, [agent_root], strip=agent_root, base=base_tree)
        base.compile_python(workload_root, [workload_root], strip=workload_root, base=base_tree)
        yield agent_root, workload_root


def _guest_mode(host: Path, guest: str) -> int:
    """FHS-style modes: executables and anything in a bin dir 0755, the rest 0644."""
    executable = bool(host.stat().st_mode & stat.S_IXUSR)
    in_bin = any(part in EXEC_DIR_NAMES for part in guest.split("/")[:-1])
    return 0o755 if executable or in_bin else 0o644


def _stage_mapping(mapping: Mapping, root: Path) -> None:
    destination = root / mapping.guest.lstrip("/")
    if mapping.host.is_dir():
        for host in sorted(mapping.host.rglob("*")):
            if host.is_file() and "__pycache__" not in host.parts:
                relative = host.relative_to(mapping.host).as_posix()
                _stage_file(host, destination / relative, f"{mapping.guest}/{relative}")
    else:
        _stage_file(mapping.host, destination, mapping.guest)


def _stage_file(host: Path, destination: Path, guest: str) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(host, destination)
    os.chmod(destination, _guest_mode(host, guest))


def guest_layout(base_tree: Path, kernel_artifacts: kernel.KernelArtifacts,
                 overlay: tuple[Path, Path], spec: BuildSpec, *, with_workload: bool) -> Layout:
    layout = Layout()
    if with_workload and spec.source_dir is not None:
        layout.add_tree(spec.source_dir, "/")
    layout.add_tree(base_tree, "/")
    for directory, mode in STANDARD_DIRS:
        layout.set_dir_mode(directory, mode)
    # Before kestrel mounts devtmpfs, the kernel needs /dev/console for PID 1's stdio and
    # Python needs /dev/urandom (getrandom() may not be ready that early under emulation).
    for node, major, minor, mode in DEVICE_NODES:
        layout.add_chardev(node, major, minor, mode)
    layout.add_bytes("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    layout.add_bytes("/etc/group", b"root:x:0:\n")
    layout.add_bytes("/init", INIT_SCRIPT.encode(), 0o755)
    agent_root, workload_root = overlay
    layout.add_tree(agent_root, "/")
    add_modules(layout, kernel_artifacts)
    image_info = {"name": spec.name, "version": spec.manifest["version"],
                  "strategy": spec.strategy, "kernel": kernel_artifacts.version,
                  "role": "workload" if with_workload else "agent"}
    layout.add_bytes("/etc/kestrel/image.json",
                     (json.dumps(image_info, sort_keys=True) + "\n").encode())
    if with_workload:
        layout.add_tree(workload_root, "/")
    return layout


def add_modules(layout: Layout, kernel_artifacts: kernel.KernelArtifacts) -> list[str]:
    """Add the needed modules (decompressed) and ``/etc/kestrel/modules`` in load order."""
    release = kernel_artifacts.version
    deps = kmods.parse_modules_dep((kernel_artifacts.modules / "modules.dep").read_text())
    order = kmods.load_order(deps)
    guest_paths = []
    for relative in order:
        guest = f"/lib/modules/{release}/{kmods.uncompressed_relpath(relative)}"
        layout.add_bytes(guest, kmods.read_module(kernel_artifacts.modules / relative))
        guest_paths.append(guest)
    layout.add_bytes(f"/lib/modules/{release}/modules.dep",
                     kmods.subset_modules_dep(deps, order).encode())
    layout.add_bytes(MODULES_LIST, "".join(f"{p}\n" for p in guest_paths).encode())
    return guest_paths
