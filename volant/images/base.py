"""The shared guest userland: busybox-static + Debian's python3.11, trimmed and precompiled.

Built once per set of Debian package versions and cached on disk as a plain
directory tree; every image build (initramfs or rootfs) layers kestrel, kernel
modules and the workload on top of it.  Because the tree is keyed by the exact
package versions, a rebuild with unchanged inputs neither downloads nor
recompiles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from volant.errors import VolantError
from volant.images import apt, elf, paths
from volant.logging import get_logger

log = get_logger("volant.images.base")

PYTHON = "python3.11"
BASE_PACKAGES: tuple[str, ...] = (
    "busybox-static", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libc6", "zlib1g", "libexpat1", "libffi8",
)
# Bump when the selection/trimming rules change, so old cached trees are not reused.
RECIPE = "base-v1"
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
# Stdlib parts a headless agent and small HTTP workloads never import.
DROPPED_STDLIB = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "venv", "unittest", "__phello__", "turtle.py", "pydoc.py",
    "config-3.11-x86_64-linux-gnu", "site-packages", "dist-packages",
})
DROPPED_EXTENSION_PREFIXES = ("_test", "_ctypes_test", "xxlimited", "_xxtestfuzz",
                              "_xxsubinterpreters")
MARKER = "base.json"


def base_key(packages: list[apt.DebPackage]) -> str:
    digest = hashlib.sha256(RECIPE.encode())
    for package in sorted(packages, key=lambda p: p.name):
        digest.update(f"\n{package.pin}".encode())
    return digest.hexdigest()[:16]


def ensure_base(root: Path, names: tuple[str, ...] = BASE_PACKAGES) -> Path:
    """Return the cached base tree for the current candidate versions, building it if needed."""
    packages = [apt.candidate(name) for name in names]
    key = base_key(packages)
    final = paths.base_dir(root) / key
    if (final / MARKER).is_file():
        return final / "tree"
    debs = [apt.download(package, paths.debs_dir(root)) for package in packages]
    paths.base_dir(root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.base_dir(root), prefix=".build-") as tmp:
        work = Path(tmp)
        unpacked = work / "unpacked"
        for deb in debs:
            apt.extract(deb, unpacked)
        tree = work / "out" / "tree"
        _select(unpacked, tree)
        compile_python(tree, [tree / "usr" / "lib" / PYTHON], strip=tree)
        (work / "out" / MARKER).write_text(json.dumps(
            {"recipe": RECIPE, "packages": [p.pin for p in packages]}, indent=2) + "\n")
        _publish(work / "out", final)
    log.info("base tree ready", key=key, path=str(final))
    return final / "tree"


def _publish(built: Path, final: Path) -> None:
    """Move a finished cache entry into place; a concurrent builder that got there first
    wins (its tree may be in use), a leftover without its marker is replaced."""
    if (final / MARKER).is_file():
        return
    if final.exists():
        shutil.rmtree(final)
    try:
        built.rename(final)
    except OSError:
        if not (final / MARKER).is_file():
            raise


def _select(unpacked: Path, tree: Path) -> None:
    """Copy what the guest needs from the unpacked packages into ``tree``."""
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(unpacked / "bin" / "busybox", tree / "bin" / "busybox")
    (tree / "usr" / "bin").mkdir(parents=True)
    shutil.copy2(unpacked / "usr" / "bin" / PYTHON, tree / "usr" / "bin" / PYTHON)
    os.symlink(PYTHON, tree / "usr" / "bin" / "python3")
    stdlib = unpacked / "usr" / "lib" / PYTHON
    shutil.copytree(stdlib, tree / "usr" / "lib" / PYTHON, symlinks=True,
                    ignore=_ignore_stdlib(stdlib))
    etc_python = unpacked / "etc" / PYTHON
    if etc_python.is_dir():
        shutil.copytree(etc_python, tree / "etc" / PYTHON, symlinks=True)
    (tree / "usr" / "lib" / "python3" / "dist-packages").mkdir(parents=True)
    _copy_shared_libraries(unpacked, tree)
    _install_applets(tree)


def _ignore_stdlib(stdlib: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        dropped = {name for name in names if name == "__pycache__"}
        if Path(directory) == stdlib:
            dropped |= {name for name in names if name in DROPPED_STDLIB}
        if Path(directory).name == "lib-dynload":
            dropped |= {name for name in names if name.startswith(DROPPED_EXTENSION_PREFIXES)}
        return dropped

    return ignore


def _find_library(unpacked: Path, soname: str) -> Path | None:
    for lib_dir in LIB_DIRS:
        candidate = unpacked / lib_dir / soname
        if candidate.exists():
            return candidate
    return None


def _copy_shared_libraries(unpacked: Path, tree: Path) -> None:
    """Copy the DT_NEEDED closure of every ELF in ``tree``; drop extension modules whose
    libraries are not among the packages (e.g. ``_ssl`` without libssl): they could
    never load in the guest anyway."""
    pending = sorted(path for path in tree.rglob("*")
                     if path.is_file() and not path.is_symlink() and elf.is_elf(path))
    done: set[str] = set()
    interpreters: set[str] = set()
    while pending:
        binary = pending.pop()
        deps = elf.read_deps(binary)
        if deps.interpreter:
            interpreters.add(deps.interpreter)
        missing = [name for name in deps.needed
                   if name not in done and _find_library(unpacked, name) is None]
        if missing:
            if binary.parent.name == "lib-dynload":
                log.info("dropping extension module", module=binary.name, missing=missing)
                binary.unlink()
                continue
            raise VolantError(f"{binary.name} needs {missing}, which no base package provides")
        for name in deps.needed:
            if name in done:
                continue
            done.add(name)
            source = _find_library(unpacked, name)
            assert source is not None
            relative = source.parent.relative_to(unpacked)
            destination = tree / relative / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.resolve(), destination)
            os.chmod(destination, 0o644)
            pending.append(destination)
    for interpreter in sorted(interpreters):
        _copy_interpreter(unpacked, tree, interpreter)


def _copy_interpreter(unpacked: Path, tree: Path, interpreter: str) -> None:
    """Install the dynamic loader at its PT_INTERP path, keeping Debian's symlink layout."""
    link = unpacked / interpreter.lstrip("/")
    real = link.resolve()
    if not real.is_relative_to(unpacked):  # absolute symlink inside the package
        real = unpacked / os.readlink(link).lstrip("/")
    real_relative = real.relative_to(unpacked)
    destination = tree / real_relative
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real, destination)
    os.chmod(destination, 0o755)
    if link.is_symlink():
        guest_link = tree / interpreter.lstrip("/")
        guest_link.parent.mkdir(parents=True, exist_ok=True)
        if not guest_link.exists():
            os.symlink("/" + real_relative.as_posix(), guest_link)


def _install_applets(tree: Path) -> None:
    """Symlinks for every busybox applet in /bin and /sbin and at busybox's own path."""
    result = subprocess.run([str(tree / "bin" / "busybox"), "--list-full"], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise VolantError(f"busybox --list-full failed: {result.stderr.strip()}")
    for line in sorted(set(result.stdout.split())):
        name = line.rsplit("/", 1)[-1]
        if name == "busybox":
            continue
        for relative in (f"bin/{name}", f"sbin/{name}", line):
            link = tree / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(link):
                os.symlink("/bin/busybox", link)


def python_interpreter(tree: Path) -> list[str]:
    """A command that runs Python 3.11 on the host with the guest's bytecode magic.

    Prefer Debian's own binary from the tree (with its stdlib via PYTHONHOME);
    fall back to the running interpreter when that is 3.11 too.
    """
    candidate = [str(tree / "usr" / "bin" / PYTHON)]
    env = _compile_env(tree)
    probe = subprocess.run([*candidate, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, env=env, check=False)
    if probe.returncode == 0 and probe.stdout.strip() == "(3, 11)":
        return candidate
    if sys.version_info[:2] == (3, 11):
        return [sys.executable]
    raise VolantError("no Python 3.11 interpreter can run on this host to precompile .pyc files")


def _compile_env(tree: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONHOME": str(tree / "usr"), "LC_ALL": "C.UTF-8"}


def compile_python(tree: Path, targets: list[Path], *, strip: Path,
                   base: Path | None = None) -> None:
    """Precompile ``targets`` (in place) to unchecked-hash ``.pyc`` recording guest paths.

    ``strip`` is the host prefix removed from the recorded source paths; ``base``
    is the base tree whose Python does the compiling (defaults to ``tree``).
    """
    interpreter = python_interpreter(base or tree)
    env = _compile_env(base or tree) if interpreter[0] != sys.executable else {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    argv = [*interpreter, "-m", "compileall", "-q", "-j", "0",
            "--invalidation-mode", "unchecked-hash", "-s", str(strip), "-p", "/",
            *[str(target) for target in targets]]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise VolantError(f"compileall failed: {(result.stdout + result.stderr).strip()[-500:]}")
