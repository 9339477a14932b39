import lzma
from pathlib import Path

from volant.images import kmods

VIRTIO = "kernel/drivers/virtio"
MODULES_DEP = "\n".join([
    f"{VIRTIO}/virtio_ring.ko:",
    f"{VIRTIO}/virtio.ko: {VIRTIO}/virtio_ring.ko",
    f"{VIRTIO}/virtio_mmio.ko: {VIRTIO}/virtio.ko {VIRTIO}/virtio_ring.ko",
    "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko",
    "kernel/net/core/failover.ko:",
    "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko"
    f" kernel/net/core/failover.ko {VIRTIO}/virtio.ko {VIRTIO}/virtio_ring.ko",
    "kernel/fs/nls/nls-cp437.ko:",
    "kernel/sound/unrelated.ko:",
]) + "\n"


def test_load_order_puts_dependencies_first_and_skips_builtins() -> None:
    deps = kmods.parse_modules_dep(MODULES_DEP)
    order = kmods.load_order(deps, ("virtio_net", "virtio_mmio", "ext4", "nls_cp437"))
    names = [kmods.module_name(path) for path in order]
    assert "ext4" not in names  # not a module here: built in
    assert "unrelated" not in names
    for module, dependencies in deps.items():
        if module in order:
            for dep in dependencies:
                assert order.index(dep) < order.index(module)
    assert names[-1] == "nls_cp437"
    assert len(names) == len(set(names))


def test_module_name_strips_compression_and_folds_dashes() -> None:
    assert kmods.module_name("kernel/fs/nls/nls-cp437.ko.zst") == "nls_cp437"
    assert kmods.uncompressed_relpath("a/b.ko.xz") == "a/b.ko"


def test_subset_modules_dep_names_uncompressed_files() -> None:
    deps = kmods.parse_modules_dep(MODULES_DEP)
    text = kmods.subset_modules_dep(deps, ["kernel/net/core/failover.ko",
                                           "kernel/drivers/net/virtio_net.ko.xz"])
    assert text.splitlines()[0] == "kernel/net/core/failover.ko:"
    assert text.splitlines()[1].startswith("kernel/drivers/net/virtio_net.ko: ")


def test_read_module_decompresses_xz(tmp_path: Path) -> None:
    module = tmp_path / "m.ko.xz"
    module.write_bytes(lzma.compress(b"\x7fELF module"))
    assert kmods.read_module(module) == b"\x7fELF module"
