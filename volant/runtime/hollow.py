"""The hollow launcher: a stand-in VMM for control-plane tests and benchmarks.

It never runs a guest and never counts as "the VM works" (like Kubernetes' kubemark hollow
nodes). It honours the VMM contract volantd depends on: detached process with the marker,
serial and control sockets, a boot marker line in the console log, QMP-style power-down,
exit on SIGTERM.

The stand-in is a small C program compiled with gcc on first use into a cache directory,
keyed by the source's hash; without gcc a pure-Python version is used (much heavier per VM).

Behaviour knobs, for crash-detection and stop-ladder tests, in order of precedence:
kernel command-line tokens ``hollow.crash_after=<seconds>``, ``hollow.ignore_sigterm=1``,
``hollow.ignore_powerdown=1`` (accepts the power-down request without exiting, like a guest
with no ACPI handler), ``hollow.boot_marker=<text>`` and ``hollow.boot_delay=<seconds>``
(the marker comes that late, like a guest still booting) (so a manifest can ask for them),
then the launcher's constructor arguments, whose defaults come from
``VOLANT_HOLLOW_CRASH_AFTER``, ``VOLANT_HOLLOW_IGNORE_SIGTERM`` and
``VOLANT_HOLLOW_IGNORE_POWERDOWN``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
import trio

from volant.logging import get_logger
from volant.runtime.base import (
    LaunchSpec,
    VMMHandle,
    VMMIdentity,
    adopt_identity,
    remove_stale,
)
from volant.runtime.process import launch_process
from volant.runtime.qmp import request_powerdown

KIND = "hollow"
HOLLOW_BOOT_MARKER = "hollow-vmm: boot complete"
SOURCE = Path(__file__).with_name("hollow_vmm.c")

_log = get_logger("volant.runtime.hollow")


@attrs.frozen
class HollowBehaviour:
    crash_after: float | None = None
    ignore_sigterm: bool = False
    ignore_powerdown: bool = False
    boot_marker: str = HOLLOW_BOOT_MARKER
    boot_delay: float = 0.0  # seconds before the boot marker: a guest that is still booting


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def behaviour_for(cmdline: str, defaults: HollowBehaviour) -> HollowBehaviour:
    """Apply ``hollow.*`` tokens of a kernel command line on top of the launcher defaults."""
    behaviour = defaults
    for token in cmdline.split():
        key, sep, value = token.partition("=")
        if not sep:
            continue
        if key == "hollow.crash_after":
            try:
                behaviour = attrs.evolve(behaviour, crash_after=float(value))
            except ValueError:
                _log.warning("hollow_bad_token", token=token)
        elif key == "hollow.ignore_sigterm":
            behaviour = attrs.evolve(behaviour, ignore_sigterm=_truthy(value))
        elif key == "hollow.ignore_powerdown":
            behaviour = attrs.evolve(behaviour, ignore_powerdown=_truthy(value))
        elif key == "hollow.boot_marker":
            behaviour = attrs.evolve(behaviour, boot_marker=value)
        elif key == "hollow.boot_delay":
            try:
                behaviour = attrs.evolve(behaviour, boot_delay=max(0.0, float(value)))
            except ValueError:
                _log.warning("hollow_bad_token", token=token)
    return behaviour


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "volant"


def compile_hollow(cache_dir: Path, source: Path = SOURCE) -> Path | None:
    """The compiled stand-in, built once per source version; None if gcc is unavailable.

    Built into a temporary name and renamed, so concurrent first uses (two daemons, parallel
    tests) never see a half-written binary.
    """
    try:
        code = source.read_bytes()
    except OSError:  # e.g. a wheel built without the C source as package data
        return None
    target = cache_dir / f"hollow-vmm-{hashlib.sha256(code).hexdigest()[:16]}"
    if os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hollow-vmm-", dir=cache_dir)
    os.close(fd)
    try:
        result = subprocess.run(
            [gcc, "-O2", "-o", tmp, str(source)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            _log.warning("hollow_compile_failed", stderr=result.stderr[-2000:])
            return None
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        remove_stale(tmp)
    return target


class HollowLauncher:
    kind = KIND

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        binary: Path | None = None,
        crash_after: float | None = None,
        ignore_sigterm: bool | None = None,
        ignore_powerdown: bool | None = None,
        boot_marker: str = HOLLOW_BOOT_MARKER,
        use_c: bool = True,
        ready_timeout: float = 10.0,
        control_timeout: float = 5.0,
    ) -> None:
        if crash_after is None and os.environ.get("VOLANT_HOLLOW_CRASH_AFTER"):
            crash_after = float(os.environ["VOLANT_HOLLOW_CRASH_AFTER"])
        if ignore_sigterm is None:
            ignore_sigterm = _truthy(os.environ.get("VOLANT_HOLLOW_IGNORE_SIGTERM", ""))
        if ignore_powerdown is None:
            ignore_powerdown = _truthy(os.environ.get("VOLANT_HOLLOW_IGNORE_POWERDOWN", ""))
        self.defaults = HollowBehaviour(crash_after, ignore_sigterm, ignore_powerdown, boot_marker)
        self._cache_dir = cache_dir or default_cache_dir()
        self._binary = binary
        self._use_c = use_c
        self._ready_timeout = ready_timeout
        self._control_timeout = control_timeout
        self._command: list[str] | None = None

    def command(self) -> list[str]:
        """The stand-in's executable (compiling it on first use)."""
        if self._command is None:
            binary = self._binary
            if binary is None and self._use_c:
                binary = compile_hollow(self._cache_dir)
            if binary is not None:
                self._command = [str(binary)]
            else:
                _log.warning("hollow_python_fallback", reason="gcc unavailable or disabled")
                self._command = [sys.executable, "-m", "volant.runtime.hollow_fallback"]
        return self._command

    @staticmethod
    def sockets(spec: LaunchSpec) -> tuple[Path, Path]:
        return spec.run_dir / "serial.sock", spec.run_dir / "control.sock"

    def build_argv(self, spec: LaunchSpec) -> list[str]:
        behaviour = behaviour_for(spec.cmdline, self.defaults)
        serial, control = self.sockets(spec)
        argv = [
            *self.command(),
            "--name",
            spec.name,
            "--serial",
            str(serial),
            "--control",
            str(control),
            "--console-log",
            str(spec.console_log),
            "--cmdline",
            spec.cmdline,
            "--boot-marker",
            behaviour.boot_marker,
        ]
        if behaviour.crash_after is not None:
            argv += ["--crash-after", repr(behaviour.crash_after)]
        if behaviour.boot_delay > 0:
            argv += ["--boot-delay", repr(behaviour.boot_delay)]
        if behaviour.ignore_sigterm:
            argv.append("--ignore-sigterm")
        if behaviour.ignore_powerdown:
            argv.append("--ignore-powerdown")
        return argv

    async def launch(self, spec: LaunchSpec) -> VMMHandle:
        if self._command is None:
            await trio.to_thread.run_sync(self.command)
        serial, control = self.sockets(spec)
        return await launch_process(
            spec,
            self.build_argv(spec),
            kind=KIND,
            serial_socket=serial,
            control_socket=control,
            ready_timeout=self._ready_timeout,
        )

    def adopt(self, identity: VMMIdentity) -> VMMHandle | None:
        return adopt_identity(identity, KIND)

    async def request_shutdown(self, handle: VMMHandle) -> bool:
        return await request_powerdown(handle.identity.control_socket, handle.pid,
                                       self._control_timeout)

    def cleanup(self, identity: VMMIdentity) -> None:
        remove_stale(identity.serial_socket, identity.control_socket)


__all__ = ["HOLLOW_BOOT_MARKER", "HollowBehaviour", "HollowLauncher"]
