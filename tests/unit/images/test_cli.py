"""CLI error handling: one-line messages and exit code 2 for bad input (no apt download)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from volant.images import apt, cli, kernel

runner = CliRunner()


def _fledge(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fledge.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "fragment"), [
    ('version = "1"\nstrategy = "nope"\n', "unknown strategy"),
    ("version = = 1\n", "invalid TOML"),
    ('version = "1"\nstrategy = "initramfs"\n[mappings]\n"absent.py" = "/opt/a.py"\n',
     "does not exist"),
    ('version = "1"\nstrategy = "initramfs"\n[mappings]\n"fledge.toml" = "../etc/x"\n',
     "must be absolute"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    result = runner.invoke(cli.app, ["build", str(_fledge(tmp_path, text)),
                                     "--output", str(tmp_path / "out"),
                                     "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volant-image: error:")
    assert fragment in lines[0]
    assert not (tmp_path / "cache").exists()


def test_missing_debian_package_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(metapackage: str = kernel.METAPACKAGE) -> str:
        apt.depends("volant-no-such-kernel-package")
        raise AssertionError("apt-cache should have failed")

    monkeypatch.setattr(kernel, "resolve_kernel_package", missing)
    result = runner.invoke(cli.app, ["kernel", "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "volant-no-such-kernel-package" in result.output
    assert "not found" in result.output


def test_candidate_of_unknown_package_raises() -> None:
    with pytest.raises(apt.PackageNotFoundError, match="apt-get update"):
        apt.candidate("volant-no-such-package")


def test_candidate_knows_the_epoch_escaped_file_name() -> None:
    package = apt.candidate("zlib1g")
    assert package.version
    if ":" in package.version:
        assert "%3a" in package.filename
    assert package.filename.endswith(f"_{package.arch}.deb")
