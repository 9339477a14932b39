"""Cloud-init: merge rules, path rejection, NoCloud seed images read back."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from volant.cloudinit import (
    SeedDocuments,
    ensure_seed,
    merge_cloud_init,
    reject_path_documents,
    remove_seed,
    seed_documents,
)
from volant.errors import ValidationError
from volant.manifest import CloudInit, CloudInitDoc


def inline(text: str) -> CloudInitDoc:
    return CloudInitDoc(inline=True, content=text)


BASE = CloudInit(
    datasource="NoCloud",
    seed_mode="vfat",
    user_data=inline("#cloud-config\nbase: 1\n"),
    network_config=inline("version: 2\n"),
)


# ------------------------------------------------------------------ merge


def test_override_document_replaces_base_document_entirely() -> None:
    override = CloudInit(datasource="NoCloud", user_data=inline("#cloud-config\nvm: 1\n"))
    merged = merge_cloud_init(BASE, override)
    assert merged is not None
    assert merged.user_data == inline("#cloud-config\nvm: 1\n")
    assert merged.network_config == BASE.network_config  # not overridden: kept
    assert merged.seed_mode == "vfat"  # override left the default: base wins


def test_empty_override_document_keeps_base_and_seed_mode_override_wins() -> None:
    override = CloudInit(datasource="NoCloud", seed_mode="iso9660",
                         user_data=CloudInitDoc(), meta_data=inline("instance-id: x\n"))
    merged = merge_cloud_init(BASE, override)
    assert merged is not None
    assert merged.user_data == BASE.user_data
    assert merged.meta_data == inline("instance-id: x\n")
    vfat_override = CloudInit(datasource="NoCloud", seed_mode="vfat")
    merged_iso = merge_cloud_init(CloudInit(datasource="NoCloud"), vfat_override)
    assert merged_iso is not None and merged_iso.seed_mode == "vfat"


def test_no_cloud_init_means_no_seed() -> None:
    assert merge_cloud_init(None, None) is None
    assert seed_documents(None, 1, "web") is None
    assert merge_cloud_init(None, BASE) is BASE
    assert merge_cloud_init(BASE, None) is BASE


def test_path_documents_are_rejected_with_a_clear_400() -> None:
    ci = CloudInit(datasource="NoCloud", user_data=CloudInitDoc(path="user-data.yaml"))
    with pytest.raises(ValidationError) as info:
        reject_path_documents(ci)
    assert info.value.status == 400
    assert info.value.details["field"] == "cloud_init.user_data.path"
    assert "resolved by volar at install time" in info.value.message
    reject_path_documents(BASE)  # content only: fine


def test_default_documents() -> None:
    docs = seed_documents(CloudInit(datasource="NoCloud"), 7, "web-1")
    assert docs is not None
    assert docs.user_data == "#cloud-config\n"
    assert docs.meta_data == "instance-id: volant-7\nlocal-hostname: web-1\n"
    assert docs.network_config is None
    assert set(docs.files()) == {"user-data", "meta-data"}


# ------------------------------------------------------------------ images


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        joliet = sorted(
            c.file_identifier().decode("utf-16-be")
            for c in iso.list_children(joliet_path="/") if not c.is_dir()
        )
        assert joliet == sorted(files)
        return label, files
    finally:
        iso.close()


def test_iso_seed_is_cidata_with_exact_files(tmp_path: Path) -> None:
    ci = CloudInit(datasource="NoCloud", user_data=inline("#cloud-config\npackages: [jq]\n"),
                   network_config=inline("version: 2\nethernets: {}\n"))
    docs = seed_documents(ci, 3, "db")
    assert docs is not None
    dest = tmp_path / "vm" / "seed.img"
    path, changed = ensure_seed(dest, docs)
    assert (path, changed) == (dest, True)
    label, files = read_iso(dest)
    assert label == "cidata"
    assert files == {
        "user-data": b"#cloud-config\npackages: [jq]\n",
        "meta-data": b"instance-id: volant-3\nlocal-hostname: db\n",
        "network-config": b"version: 2\nethernets: {}\n",
    }


def test_unchanged_content_is_not_rebuilt_and_changed_content_is(tmp_path: Path) -> None:
    dest = tmp_path / "seed.img"
    docs = SeedDocuments(user_data="#cloud-config\n", meta_data="instance-id: a\n")
    ensure_seed(dest, docs)
    first_inode = dest.stat().st_ino
    assert ensure_seed(dest, docs) == (dest, False)
    assert dest.stat().st_ino == first_inode
    changed = SeedDocuments(user_data="#cloud-config\nx: 1\n", meta_data="instance-id: a\n")
    assert ensure_seed(dest, changed) == (dest, True)
    assert read_iso(dest)[1]["user-data"] == b"#cloud-config\nx: 1\n"
    # A lost image is rebuilt even though the digest file survived.
    dest.unlink()
    assert ensure_seed(dest, changed)[1] is True
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_remove_seed(tmp_path: Path) -> None:
    dest = tmp_path / "seed.img"
    ensure_seed(dest, SeedDocuments(user_data="u", meta_data="m"))
    assert remove_seed(dest) is True
    assert list(tmp_path.iterdir()) == []
    assert remove_seed(dest) is False


def test_vfat_seed_is_labelled_and_holds_the_files(tmp_path: Path) -> None:
    # dosfstools and mtools are installed by `make setup` (APT_PACKAGES).
    assert shutil.which("mtype") and shutil.which("mkfs.vfat"), "apt-get install dosfstools mtools"
    docs = SeedDocuments(user_data="#cloud-config\nhello: vfat\n", meta_data="instance-id: v\n",
                         seed_mode="vfat")
    dest = tmp_path / "seed.img"
    assert ensure_seed(dest, docs) == (dest, True)
    boot = dest.read_bytes()[:512]
    assert boot[43:54] == b"CIDATA     "  # FAT12/16 boot-sector volume label
    for name, expected in docs.files().items():
        out = subprocess.run(["mtype", "-i", str(dest), f"::{name}"], capture_output=True,
                             check=True)
        assert out.stdout == expected
    assert ensure_seed(dest, docs)[1] is False
