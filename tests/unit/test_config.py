from pathlib import Path

import pytest

from volant.config import load_config
from volant.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_upstream_names_and_safe_listen() -> None:
    cfg = load_config(environ={})
    assert cfg.api_listen == "127.0.0.1:7777"
    assert cfg.bridge == "vbr0"
    assert cfg.subnet == "192.168.127.0/24"
    assert cfg.host_ip == "192.168.127.1"
    assert cfg.listen_port == 7777


def test_example_config_file_loads() -> None:
    cfg = load_config(ROOT / "conf" / "volantd.toml", environ={})
    assert cfg.api_listen == "127.0.0.1:7777"
    assert cfg.hypervisor == "auto"


def test_environment_overrides_file(tmp_path: Path) -> None:
    conf = tmp_path / "v.toml"
    conf.write_text('[volantd]\nbridge = "br-file"\napi_allow_cidr = ["10.0.0.0/8"]\n')
    env = {"VOLANT_BRIDGE": "br-env", "VOLANT_STATE_DIR": str(tmp_path / "s")}
    cfg = load_config(conf, environ=env)
    assert cfg.bridge == "br-env"
    assert cfg.api_allow_cidr == ("10.0.0.0/8",)
    assert cfg.state_dir == tmp_path / "s"


def test_config_env_var_names_file(tmp_path: Path) -> None:
    conf = tmp_path / "v.toml"
    conf.write_text('[volantd]\nsubnet = "10.9.0.0/24"\nhost_ip = "10.9.0.1"\n')
    cfg = load_config(environ={"VOLANT_CONFIG": str(conf)})
    assert cfg.subnet == "10.9.0.0/24"


def test_comma_lists_from_environment() -> None:
    cfg = load_config(environ={"VOLANT_CORS_ORIGINS": "https://a.example, https://b.example,"})
    assert cfg.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"VOLANT_SUBNET": "10.0.0.0/8"}, "host_ip"),
        ({"VOLANT_SUBNET": "fd00::/64"}, "VOLANT_SUBNET"),
        ({"VOLANT_SUBNET": "nonsense"}, "VOLANT_SUBNET"),
        ({"VOLANT_HOST_IP": "192.168.127.0"}, "VOLANT_HOST_IP"),
        ({"VOLANT_HOST_IP": "192.168.127.255"}, "VOLANT_HOST_IP"),
        ({"VOLANT_BRIDGE": "a-very-long-bridge-name"}, "VOLANT_BRIDGE"),
        ({"VOLANT_API_LISTEN": "7777"}, "VOLANT_API_LISTEN"),
        ({"VOLANT_API_LISTEN": "127.0.0.1:99999"}, "VOLANT_API_LISTEN"),
        ({"VOLANT_API_ALLOW_CIDR": "10.0.0.0/8,bogus"}, "VOLANT_API_ALLOW_CIDR"),
        ({"VOLANT_HYPERVISOR": "firecracker"}, "VOLANT_HYPERVISOR"),
        ({"VOLANT_ACCEL": "hvf"}, "VOLANT_ACCEL"),
        ({"VOLANT_MANAGE_NETWORK": "maybe"}, "VOLANT_MANAGE_NETWORK"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    assert info.value.key == key
    assert str(info.value).startswith(key)


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    conf = tmp_path / "v.toml"
    conf.write_text('[volantd]\nlisten = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(conf, environ={})
    assert info.value.key == "listen"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[volantd\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad, environ={})


def test_hypervisor_accepts_a_binary_path() -> None:
    cfg = load_config(environ={"VOLANT_HYPERVISOR": "/opt/ch/cloud-hypervisor"})
    assert cfg.hypervisor == "/opt/ch/cloud-hypervisor"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "192.168.127.1:7777"),  # loopback listen: guests use the bridge address
        ({"VOLANT_API_LISTEN": "0.0.0.0:8000"}, "192.168.127.1:8000"),
        ({"VOLANT_API_LISTEN": "10.1.2.3:7000"}, "10.1.2.3:7000"),
        ({"VOLANT_API_ADVERTISE": "api.example:443"}, "api.example:443"),
    ],
)
def test_advertise_address_follows_upstreams_rule(env: dict[str, str], expected: str) -> None:
    cfg = load_config(environ=env)
    assert f"{cfg.advertise_host}:{cfg.advertise_port}" == expected
