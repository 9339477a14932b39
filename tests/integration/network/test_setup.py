"""Host setup/teardown as a plan of idempotent steps, inside a throw-away namespace (root)."""

import subprocess
from pathlib import Path

import pytest

from volant.config import Config, load_config
from volant.network import links, nat
from volant.network.setup import SetupOptions, load_manifest, render_unit, run_setup, run_teardown

pytestmark = pytest.mark.netns


def config(tmp: Path, **extra: object) -> Config:
    return load_config(
        None, {},
        state_dir=str(tmp / "state"), runtime_dir=str(tmp / "run"),
        kernel_bzimage=str(tmp / "state" / "kernel" / "bzImage"),
        kernel_vmlinux=str(tmp / "state" / "kernel" / "vmlinux"),
        bridge="vbr7", subnet="10.93.0.0/24", host_ip="10.93.0.1", **extra,
    )


def test_unit_carries_every_setting_but_secrets(tmp_path: Path) -> None:
    cfg = config(tmp_path, api_key="s3cret", cors_origins="https://a.example,https://b.example")
    unit = render_unit(cfg, SetupOptions(exec_start="/usr/local/bin/volantd run"))
    for line in ('Environment="VOLANT_HOST_IP=10.93.0.1"', 'Environment="VOLANT_BRIDGE=vbr7"',
                 'Environment="VOLANT_SUBNET=10.93.0.0/24"',
                 f'Environment="VOLANT_STATE_DIR={tmp_path}/state"',
                 f'Environment="VOLANT_LOG_DIR={tmp_path}/state/logs"',
                 'Environment="VOLANT_CORS_ORIGINS=https://a.example,https://b.example"',
                 'Environment="VOLANT_MANAGE_NETWORK=true"',
                 "ExecStart=/usr/local/bin/volantd run",
                 f"EnvironmentFile=-{tmp_path}/state/volantd.env"):
        assert line in unit.splitlines(), line
    assert "s3cret" not in unit and "${" not in unit


def test_setup_is_idempotent_and_teardown_undoes_exactly_it(netns: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, api_key="s3cret")
    options = SetupOptions(netns=netns, unit_path=tmp_path / "units" / "volantd.service",
                           systemd=False)
    printed: list[str] = []
    preview = run_setup(cfg, options, dry_run=True, echo=printed.append)
    assert all(r.acted for r in preview) and all(p.startswith("[would do]") for p in printed)
    assert not (tmp_path / "state").exists() and not links.link_exists("vbr7", netns)

    first = run_setup(cfg, options, echo=lambda _: None)
    assert all(r.acted for r in first)
    assert links.addresses("vbr7", netns) == ("10.93.0.1/24",)
    assert nat.ip_forward_enabled(netns)
    assert nat.nat_rules(netns=netns).present
    unit = (tmp_path / "units" / "volantd.service").read_text()
    assert "VOLANT_HOST_IP=10.93.0.1" in unit
    env_file = tmp_path / "state" / "volantd.env"
    assert env_file.read_text() == "VOLANT_API_KEY=s3cret\n"
    assert env_file.stat().st_mode & 0o777 == 0o600

    second = run_setup(cfg, options, echo=lambda _: None)
    assert not any(r.acted for r in second)
    assert load_manifest(cfg) == [r.key for r in first]

    (tmp_path / "state" / "vms").mkdir()  # data appears: teardown must keep it
    run_teardown(cfg, options, echo=lambda _: None)
    assert not links.link_exists("vbr7", netns)
    assert not nat.nat_rules(netns=netns).present
    assert not nat.ip_forward_enabled(netns)
    assert not (tmp_path / "units" / "volantd.service").exists() and not env_file.exists()
    assert (tmp_path / "state" / "vms").is_dir()
    assert not (tmp_path / "run").exists() and not (tmp_path / "state" / "kernel").exists()


def test_teardown_leaves_what_setup_did_not_create(netns: str, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    links.ensure_bridge("vbr7", "10.93.0.1/24", netns=netns)  # pre-existing, admin-made
    nat.ensure_ip_forward(netns)
    options = SetupOptions(netns=netns, unit_path=None)
    results = {r.key: r.acted for r in run_setup(cfg, options, echo=lambda _: None)}
    assert results["bridge:vbr7"] is False and results["ip_forward"] is False
    run_teardown(cfg, options, echo=lambda _: None)
    assert links.link_exists("vbr7", netns) and nat.ip_forward_enabled(netns)
    assert not nat.nat_rules(netns=netns).present


def test_cli_dry_run_prints_steps(tmp_path: Path) -> None:
    env = {"VOLANT_STATE_DIR": str(tmp_path / "s"), "VOLANT_RUNTIME_DIR": str(tmp_path / "r"),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    out = subprocess.run(
        [".venv/bin/python", "-m", "volant.network.setup", "setup", "--dry-run", "--no-unit"],
        env=env, capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout
    assert f"[would do] create directory {tmp_path / 's'}" in out
    assert "ensure nftables table ip volant" in out
    assert not (tmp_path / "s").exists()
