import shutil
import sys
from pathlib import Path

import pytest

from volant.images import elf


def test_reads_interpreter_and_needed_of_a_real_binary() -> None:
    binary = Path(sys.executable).resolve()
    deps = elf.read_deps(binary)
    # every dynamically linked Linux executable names its loader and libc (directly or not)
    assert deps.interpreter is not None and "ld-linux" in deps.interpreter
    assert deps.needed, "python has DT_NEEDED entries"
    assert all(name.startswith("lib") for name in deps.needed)


def test_static_busybox_has_no_dependencies() -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        pytest.fail("busybox-static must be installed for the image builder")
    assert elf.read_deps(Path(busybox)).needed == ()


def test_non_elf_is_rejected(tmp_path: Path) -> None:
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    assert not elf.is_elf(text)
    with pytest.raises(ValueError):
        elf.read_deps(text)
