"""``volant-image``: fetch the guest kernel and build boot media from a fledge.toml."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from volant.errors import NotFoundError, ValidationError, VolantError
from volant.images import builder, kernel, paths
from volant.logging import configure_logging

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Build Volant boot media: kernel, initramfs, ext4 rootfs.")

CacheOption = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Cache root (default $VOLANT_IMAGE_CACHE or /var/cache/volant).")]


def _fail(error: VolantError) -> typer.Exit:
    typer.echo(f"volant-image: error: {error.message}", err=True)
    bad_input = isinstance(error, ValidationError | NotFoundError)
    return typer.Exit(code=2 if bad_input else 1)


@app.command("kernel")
def kernel_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the paths as JSON.")] = False,
    cache_dir: CacheOption = None,
) -> None:
    """Fetch Debian's cloud kernel (cached) and print bzImage, vmlinux and modules paths."""
    try:
        artifacts = kernel.ensure_kernel(paths.cache_root(cache_dir))
    except VolantError as error:
        raise _fail(error) from None
    if as_json:
        typer.echo(json.dumps(artifacts.to_json()))
    else:
        for key, value in artifacts.to_json().items():
            typer.echo(f"{key}: {value}")


@app.command("build")
def build_command(
    fledge_toml: Annotated[Path, typer.Argument(help="The fledge.toml to build.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")],
    kernel_version: Annotated[str | None, typer.Option(
        "--kernel-version", help="Kernel release whose modules go in (default: apt's current).")]
        = None,
    cache_dir: CacheOption = None,
) -> None:
    """Build the image and its manifest; the manifest path is the last line printed."""
    try:
        result = builder.build(fledge_toml, output, cache=paths.cache_root(cache_dir),
                               kernel_version=kernel_version)
    except VolantError as error:
        raise _fail(error) from None
    for warning in result.warnings:
        typer.echo(f"volant-image: warning: {warning}", err=True)
    size = result.artifact.stat().st_size
    typer.echo(f"{result.strategy}: {result.artifact} ({size / 1e6:.1f} MB)")
    if result.initramfs is not None:
        typer.echo(f"kestrel initramfs: {result.initramfs} "
                   f"({result.initramfs.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"kernel: {result.kernel.vmlinux}")
    typer.echo(str(result.manifest))


def main() -> None:
    configure_logging("warning" if not sys.stderr.isatty() else "info")
    app()
