from pathlib import Path

import pytest

from volant.errors import ValidationError
from volant.images.fledge import load_spec

MANIFEST = """
[manifest]
name = "demo"
version = "1.0.0"
[manifest.resources]
cpu_cores = 1
memory_mb = 128
[manifest.workload]
type = "http"
base_url = "http://127.0.0.1:8000"
entrypoint = ["/usr/bin/python3", "/opt/app.py"]
"""


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "app.py").write_text("print('hi')\n")
    path = tmp_path / "fledge.toml"
    path.write_text(body + MANIFEST)
    return path


def test_initramfs_spec_with_mapping(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, 'version = "1"\nstrategy = "initramfs"\n'
                                      '[mappings]\n"app.py" = "/opt//app.py"\n'))
    assert spec.strategy == "initramfs"
    assert spec.name == "demo"
    assert spec.mappings[0].host == tmp_path / "app.py"
    assert spec.mappings[0].guest == "/opt/app.py"
    assert spec.agent_path is None


def test_rootfs_spec_with_local_source(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    spec = load_spec(_write(tmp_path, 'version = "1"\nstrategy = "oci_rootfs"\n'
                                      '[source]\npath = "root"\n'
                                      '[filesystem]\ntype = "ext4"\nsize_buffer_mb = 8\n'))
    assert spec.strategy == "oci_rootfs"
    assert spec.source_dir == tmp_path / "root"
    assert spec.size_buffer_mb == 8


@pytest.mark.parametrize(("body", "message"), [
    ('version = "1"\nstrategy = "squashfs"\n', "unknown strategy 'squashfs'"),
    ('version = "2"\nstrategy = "initramfs"\n', 'version must be "1"'),
    ('version = "1"\nstrategy = "initramfs"\n[mappings]\n"missing.py" = "/opt/x"\n',
     "does not exist"),
    ('version = "1"\nstrategy = "initramfs"\n[mappings]\n"app.py" = "opt/app.py"\n',
     "must be absolute"),
    ('version = "1"\nstrategy = "initramfs"\n[mappings]\n"app.py" = "/opt/../etc/x"\n',
     "must not contain '..'"),
    ('version = "1"\nstrategy = "oci_rootfs"\n[source]\nimage = "docker://nginx"\n',
     "not supported"),
    ('version = "1"\nstrategy = "oci_rootfs"\n[filesystem]\ntype = "xfs"\nsize_buffer_mb = 1\n',
     "only ext4"),
    ('version = "1"\nstrategy = "initramfs"\n[agent]\nsource_strategy = "release"\n',
     "only 'local'"),
    ('version = "1"\nstrategy = "initramfs"\nbogus = 1\n', "unknown key(s) bogus"),
])
def test_bad_specs_give_clear_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_spec(_write(tmp_path, body))
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "fledge.toml"
    path.write_text('version = "1\n')
    with pytest.raises(ValidationError, match="invalid TOML"):
        load_spec(path)


def test_invalid_plugin_name(tmp_path: Path) -> None:
    path = _write(tmp_path, 'version = "1"\nstrategy = "initramfs"\n')
    path.write_text(path.read_text().replace('name = "demo"', 'name = "Bad_Name"'))
    with pytest.raises(ValidationError, match="invalid plugin"):
        load_spec(path)


def test_busybox_url_is_ignored_with_a_warning(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, 'version = "1"\nstrategy = "initramfs"\n'
                                      '[source]\nbusybox_url = "https://example.invalid/bb"\n'))
    assert any("busybox_url" in warning for warning in spec.warnings)


def test_example_hello_plugin_parses() -> None:
    root = Path(__file__).resolve().parents[3]
    spec = load_spec(root / "conf" / "plugins" / "hello" / "fledge.toml")
    assert spec.name == "hello"
    assert spec.manifest["version"] == "0.1.0"
    assert {m.guest for m in spec.mappings} == {"/opt/hello/hello.py", "/opt/hello/openapi.json"}
