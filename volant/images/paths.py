"""Where the builder keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE_ROOT = Path("/var/cache/volant")
CACHE_ENV = "VOLANT_IMAGE_CACHE"


def cache_root(override: Path | None = None) -> Path:
    """``--cache-dir`` wins, then ``$VOLANT_IMAGE_CACHE``, then ``/var/cache/volant``."""
    if override is not None:
        return override.absolute()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).absolute()
    return DEFAULT_CACHE_ROOT


def debs_dir(root: Path) -> Path:
    return root / "debs"


def kernel_dir(root: Path) -> Path:
    return root / "kernel"


def base_dir(root: Path) -> Path:
    return root / "base"
