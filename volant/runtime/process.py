"""Detached VMM spawning: the VMM must outlive volantd (crash or upgrade) and stay findable.

``start_new_session`` puts the VMM in its own session and process group, so a signal to
volantd's group (Ctrl-C, systemd stopping the daemon's main process) does not reach it, and
nothing of volantd's stdio is inherited. The environment is an allow-list, not a copy of
volantd's: the daemon's environment holds secrets (the API key) that a VMM must not see in
``/proc/<pid>/environ``. The marker variable is added to it.
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from volant.logging import get_logger
from volant.runtime.base import (
    MARKER_ENV,
    LaunchError,
    LaunchSpec,
    RuntimeUnsupported,
    VMMHandle,
    VMMIdentity,
    open_pidfd,
    read_start_time,
    remove_stale,
)

_log = get_logger("volant.runtime.process")

_ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "HOME")


def vmm_environment(marker: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: os.environ[key] for key in _ENV_ALLOWLIST if key in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if extra:
        env.update(extra)
    env[MARKER_ENV] = marker
    return env


def spawn_detached(
    argv: Sequence[str],
    *,
    marker: str,
    log_path: Path,
    cwd: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session; stdout/stderr are appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log, open(os.devnull, "rb") as devnull:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=devnull,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
                env=vmm_environment(marker, extra_env),
                cwd=cwd or "/",  # never pin volantd's working directory for the VMM's life
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {argv[0]}: {exc}", argv=list(argv)) from exc


def make_handle(
    popen: subprocess.Popen[bytes],
    *,
    kind: str,
    marker: str,
    serial_socket: Path,
    control_socket: Path,
    console_log: Path,
) -> VMMHandle:
    """Record the identity of a process we just spawned and wrap it in a handle."""
    pidfd = open_pidfd(popen.pid)
    start_time = read_start_time(popen.pid)
    if pidfd is None or start_time is None:
        # Exited already; the caller sees it through wait() (the zombie keeps /proc alive
        # until reaped, so this only happens if something else reaped it).
        returncode = popen.wait()
        raise LaunchError(f"VMM exited immediately with status {returncode}", pid=popen.pid)
    identity = VMMIdentity(
        pid=popen.pid,
        start_time=start_time,
        marker=marker,
        kind=kind,
        serial_socket=str(serial_socket),
        control_socket=str(control_socket),
        console_log=str(console_log),
    )
    return VMMHandle(identity, pidfd, popen)


def log_tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


async def wait_for_socket(
    handle: VMMHandle, socket_path: Path, spec: LaunchSpec, timeout: float
) -> None:
    """Block until the VMM listens on ``socket_path``; fail fast if the VMM dies first.

    Polls (a few ms apart): a socket appears without any event we could wait on, and this
    runs once per launch. The file existing is not enough: a VMM binds before it listens,
    and a connection in between is refused, so readiness is a successful connect.
    """
    delay = 0.002
    with trio.move_on_after(timeout) as scope:
        while not _accepts_connections(socket_path):
            if not handle.alive:
                info = await handle.wait()
                raise LaunchError(
                    f"{handle.identity.kind} for {spec.name!r} exited during start "
                    f"(returncode={info.returncode}, signal={info.signal}): "
                    f"{log_tail(spec.vmm_log)}",
                    vm=spec.name,
                )
            await trio.sleep(delay)
            delay = min(delay * 2, 0.05)
    if scope.cancelled_caught:
        raise LaunchError(
            f"{handle.identity.kind} for {spec.name!r} did not create {socket_path} within "
            f"{timeout}s: {log_tail(spec.vmm_log)}",
            vm=spec.name,
        )


def _accepts_connections(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        sock.connect(str(path))
    except BlockingIOError:
        return True  # backlog full, but it is listening
    except OSError:  # missing, refused (bound but not listening yet)
        return False
    finally:
        sock.close()
    return True


UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise RuntimeUnsupported(
            f"socket path {str(path)!r} is longer than the {UNIX_PATH_MAX}-byte Unix socket "
            "limit; use a shorter runtime_dir",
            path=str(path),
        )


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit (one pidfd per VM adds up).

    Returns the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


def prepare_run_dir(spec: LaunchSpec, *sockets: Path) -> None:
    """Create the VM's run dir and clear sockets a previous VMM left behind."""
    spec.run_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    spec.console_log.parent.mkdir(parents=True, exist_ok=True)
    for path in sockets:
        check_socket_path(path)
        remove_stale(path)


async def launch_process(
    spec: LaunchSpec,
    argv: Sequence[str],
    *,
    kind: str,
    serial_socket: Path,
    control_socket: Path,
    ready_timeout: float,
    extra_sockets: Sequence[Path] = (),
) -> VMMHandle:
    """Spawn ``argv`` detached and return once it has created its control socket.

    If anything fails or the caller is cancelled before that, the process is killed and
    reaped, so a failed launch leaves no VMM behind.
    """
    prepare_run_dir(spec, serial_socket, control_socket, *extra_sockets)
    popen = await trio.to_thread.run_sync(
        functools.partial(spawn_detached, argv, marker=spec.marker, log_path=spec.vmm_log)
    )
    handle = make_handle(
        popen,
        kind=kind,
        marker=spec.marker,
        serial_socket=serial_socket,
        control_socket=control_socket,
        console_log=spec.console_log,
    )
    try:
        await wait_for_socket(handle, control_socket, spec, ready_timeout)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            handle.send_signal(signal.SIGKILL)
            await handle.wait()
        remove_stale(serial_socket, control_socket, *extra_sockets)
        raise
    _log.info("vmm_launched", kind=kind, vm=spec.name, pid=handle.pid, argv0=argv[0])
    return handle
