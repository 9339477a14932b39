"""Cloud-init NoCloud seeds: merge the documents, build the seed disk, rebuild only on change.

Merge (upstream section 6): the base is the manifest's ``cloud_init``, the
override the VM config's. A non-default ``seed_mode`` of the override wins (a
parsed section cannot tell "unset" from the default ``iso9660``); the
datasource is always ``NoCloud``. Per document (``user_data``, ``meta_data``,
``network_config``) the override replaces the base *entirely* when it has
content, a path or ``inline: true``; otherwise the base's document stays. No
``cloud_init`` on either side means no seed disk at all.

Only inline ``content`` reaches the seed. ``path`` documents are resolved by
``volar`` when it installs a plugin (paths are relative to the manifest file,
which the daemon never sees), so the API rejects them with a 400 instead of
silently ignoring them as upstream did (``reject_path_documents``).

Seed contents: ``user-data`` (default ``#cloud-config``), ``meta-data``
(default ``instance-id: volant-<vm id>`` and ``local-hostname: <vm name>``),
``network-config`` only when given. Formats:

* ``iso9660`` (default): an ISO9660 image with volume label ``cidata`` and
  Rock Ridge + Joliet names, what ``cloud-localds`` makes; built with pycdlib.
* ``vfat``: a FAT image labelled ``CIDATA`` (``mkfs.vfat`` from Debian's
  ``dosfstools``, files copied with ``mcopy`` from ``mtools``).

``ensure_seed`` stores the sha256 of its inputs next to the image and rebuilds
only when they change; images and the hash file are replaced atomically.
Everything here is synchronous I/O: call it from a worker thread in trio code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs
import pycdlib

from volant.errors import ValidationError, VolantError
from volant.manifest import DEFAULT_SEED_MODE, CloudInit, CloudInitDoc
from volant.store import fsync_dir, remove_file, write_atomic

__all__ = [
    "ISO_LABEL",
    "VFAT_LABEL",
    "SeedBuildError",
    "SeedDocuments",
    "build_iso",
    "build_vfat",
    "ensure_seed",
    "merge_cloud_init",
    "reject_path_documents",
    "remove_seed",
    "seed_documents",
    "seed_path",
]

ISO_LABEL = "cidata"
VFAT_LABEL = "CIDATA"
DEFAULT_USER_DATA = "#cloud-config\n"
#: Bumped when the image layout changes, so existing seeds are rebuilt.
_BUILD_FORMAT = 1
_DOC_KEYS = ("user_data", "meta_data", "network_config")
_FILE_NAMES = {"user_data": "user-data", "meta_data": "meta-data",
               "network_config": "network-config"}
#: ISO9660 level-3 names (d-characters only); Rock Ridge and Joliet carry the real ones.
_ISO_NAMES = {"user_data": "USER_DATA.;1", "meta_data": "META_DATA.;1",
              "network_config": "NETWORK_CONFIG.;1"}
_VFAT_MIN_KIB = 1024


class SeedBuildError(VolantError):
    """Building the seed image failed (a host tool missing or failing)."""

    status = 500


# ------------------------------------------------------------------------- merging


def _has_document(doc: CloudInitDoc | None) -> bool:
    return doc is not None and (bool(doc.content) or bool(doc.path) or doc.inline)


def merge_cloud_init(base: CloudInit | None, override: CloudInit | None) -> CloudInit | None:
    """The effective cloud-init of a VM (rules in the module docstring)."""
    if override is None:
        return base
    if base is None:
        return override
    seed_mode = override.seed_mode if override.seed_mode != DEFAULT_SEED_MODE else base.seed_mode
    merged = {
        key: getattr(override, key) if _has_document(getattr(override, key))
        else getattr(base, key)
        for key in _DOC_KEYS
    }
    return CloudInit(datasource=override.datasource or base.datasource, seed_mode=seed_mode,
                     **merged)


def reject_path_documents(cloud_init: CloudInit | None, field: str = "cloud_init") -> None:
    """400 when a document names a ``path``: the daemon only takes content."""
    if cloud_init is None:
        return
    for key in _DOC_KEYS:
        doc: CloudInitDoc | None = getattr(cloud_init, key)
        if doc is not None and doc.path:
            where = f"{field}.{key}.path"
            raise ValidationError(
                f"{where}: cloud-init path documents are resolved by volar at install time; "
                "send content (with inline: true) instead",
                field=where,
            )


# --------------------------------------------------------------------------- seeds


@attrs.frozen(kw_only=True)
class SeedDocuments:
    """The files of one seed, ready to write."""

    user_data: str
    meta_data: str
    network_config: str | None = None
    seed_mode: str = DEFAULT_SEED_MODE

    def files(self) -> dict[str, bytes]:
        """Seed file name -> bytes, in a stable order."""
        result = {"user-data": self.user_data.encode(), "meta-data": self.meta_data.encode()}
        if self.network_config is not None:
            result["network-config"] = self.network_config.encode()
        return result

    def digest(self) -> str:
        payload = json.dumps({"format": _BUILD_FORMAT, "mode": self.seed_mode,
                              "files": {k: v.decode() for k, v in self.files().items()}},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def _content(doc: CloudInitDoc | None) -> str | None:
    return doc.content if doc is not None and doc.content else None


def seed_documents(cloud_init: CloudInit | None, vm_id: int, vm_name: str
                   ) -> SeedDocuments | None:
    """The seed files for a merged cloud-init, ``None`` when the VM gets no seed."""
    if cloud_init is None:
        return None
    reject_path_documents(cloud_init)
    meta = _content(cloud_init.meta_data)
    if meta is None:
        meta = f"instance-id: volant-{vm_id}\nlocal-hostname: {vm_name}\n"
    return SeedDocuments(
        user_data=_content(cloud_init.user_data) or DEFAULT_USER_DATA,
        meta_data=meta,
        network_config=_content(cloud_init.network_config),
        seed_mode=cloud_init.seed_mode or DEFAULT_SEED_MODE,
    )


def seed_path(vm_runtime_dir: Path) -> Path:
    """Where a VM's seed lives: beside its sockets, removed with the VM."""
    return vm_runtime_dir / "seed.img"


def build_iso(dest: Path, docs: SeedDocuments) -> None:
    """Write an ISO9660 ``cidata`` image (Rock Ridge + Joliet names) to ``dest``."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=ISO_LABEL)
    try:
        for key, name in _FILE_NAMES.items():
            data = docs.files().get(name)
            if data is None:
                continue
            iso.add_fp(io.BytesIO(data), len(data), f"/{_ISO_NAMES[key]}", rr_name=name,
                       joliet_path=f"/{name}")
        iso.write(str(dest))
    finally:
        iso.close()


def _run_tool(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise SeedBuildError(
            f"{argv[0]} is not installed (vfat seeds need the dosfstools and mtools packages)",
            tool=argv[0])
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise SeedBuildError(f"{argv[0]} failed: {result.stderr.strip()[:500]}", tool=argv[0])


def build_vfat(dest: Path, docs: SeedDocuments) -> None:
    """Write a FAT image labelled ``CIDATA`` (no partition table) to ``dest``."""
    files = docs.files()
    size_kib = max(_VFAT_MIN_KIB, 2 * sum(len(v) for v in files.values()) // 1024 + 512)
    dest.unlink(missing_ok=True)  # mkfs.vfat -C refuses an existing file
    _run_tool(["mkfs.vfat", "-n", VFAT_LABEL, "-C", str(dest), str(size_kib)])
    with tempfile.TemporaryDirectory(prefix="volant-seed-") as staging:
        for name, data in files.items():
            source = Path(staging) / name
            source.write_bytes(data)
            _run_tool(["mcopy", "-i", str(dest), "-o", str(source), f"::{name}"])


def _hash_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def ensure_seed(dest: Path, docs: SeedDocuments) -> tuple[Path, bool]:
    """Make ``dest`` hold the seed for ``docs``; returns ``(dest, rebuilt)``.

    Unchanged inputs (same digest recorded beside an existing image) mean no
    rebuild. The image is built under a temporary name and renamed into place,
    then the digest is recorded, so a crash leaves either the old pair, or a new
    image with a stale digest (rebuilt next time) — never a half-written image.
    """
    digest = docs.digest()
    hash_file = _hash_path(dest)
    try:
        recorded = hash_file.read_text().strip()
    except FileNotFoundError:
        recorded = ""
    if recorded == digest and dest.is_file():
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if docs.seed_mode == "vfat":
            build_vfat(temp, docs)
        else:
            build_iso(temp, docs)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
        fsync_dir(dest.parent)
    finally:
        temp.unlink(missing_ok=True)
    write_atomic(hash_file, (digest + "\n").encode(), mode=0o644)
    return dest, True


def remove_seed(dest: Path) -> bool:
    """Delete the seed image and its digest; returns whether the image existed."""
    existed = remove_file(dest)
    remove_file(_hash_path(dest))
    return existed
