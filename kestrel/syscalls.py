"""Adapter for the Linux system calls kestrel needs that the stdlib lacks.

Everything goes through ctypes on libc so PID 1 never forks a helper binary for
mount(2), finit_module(2), reboot(2) or prctl(2): a fork+exec costs tens of
milliseconds under TCG emulation, a ctypes call costs microseconds.
"""

from __future__ import annotations

import ctypes
import errno
import os

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_RELATIME = 0x200000
MS_MOVE = 0x2000
MNT_DETACH = 0x2

RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567

PR_SET_CHILD_SUBREAPER = 36

_SYS_FINIT_MODULE_X86_64 = 313
_SYS_FINIT_MODULE_AARCH64 = 273

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2); raises OSError with the errno on failure."""
    rc = _lib().mount(
        source.encode(),
        target.encode(),
        fstype.encode(),
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        _raise_errno(f"mount {fstype} on {target}")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    if _lib().umount2(target.encode(), ctypes.c_int(flags)) != 0:
        _raise_errno(f"umount {target}")


def finit_module(path: str) -> bool:
    """Load a kernel module from a file; False when it is already loaded."""
    machine = os.uname().machine
    number = _SYS_FINIT_MODULE_AARCH64 if machine == "aarch64" else _SYS_FINIT_MODULE_X86_64
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        rc = _lib().syscall(ctypes.c_long(number), ctypes.c_int(fd), b"", ctypes.c_int(0))
    finally:
        os.close(fd)
    if rc != 0:
        if ctypes.get_errno() == errno.EEXIST:
            return False
        _raise_errno(f"finit_module {path}")
    return True


def reboot(command: int) -> None:
    """reboot(2): RB_POWER_OFF ends the VM. Only returns on failure."""
    if _lib().reboot(ctypes.c_int(command)) != 0:
        _raise_errno("reboot")


def set_child_subreaper() -> None:
    """Make this process adopt orphaned descendants (what PID 1 gets for free)."""
    rc = _lib().prctl(
        ctypes.c_int(PR_SET_CHILD_SUBREAPER),
        ctypes.c_ulong(1),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if rc != 0:
        _raise_errno("prctl(PR_SET_CHILD_SUBREAPER)")
