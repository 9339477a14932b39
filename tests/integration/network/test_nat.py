"""nftables table of our own, inside a throw-away namespace (root)."""

import subprocess

import pytest

from volant.errors import ValidationError
from volant.network import nat

pytestmark = pytest.mark.netns


def ruleset(netns: str) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "nft", "list", "ruleset"],
                          check=True, capture_output=True, text=True).stdout


def test_ensure_nat_is_idempotent_and_removable(netns: str) -> None:
    assert nat.nat_rules(netns=netns) == nat.NatTable(present=False)
    assert nat.ensure_nat("10.79.0.0/24", "vbr0", netns=netns) is True
    first = ruleset(netns)
    assert 'ip saddr 10.79.0.0/24 oifname != "vbr0" masquerade' in first
    assert 'iifname "vbr0" accept' in first and 'oifname "vbr0" accept' in first
    assert nat.ensure_nat("10.79.0.0/24", "vbr0", netns=netns) is False  # measured: no change
    assert ruleset(netns) == first
    table = nat.nat_rules(netns=netns)
    assert table.present
    assert {c["name"] for c in table.chains} == {"postrouting", "forward"}
    assert len(table.rules_in("postrouting")) == 1 and len(table.rules_in("forward")) == 2
    assert nat.remove_nat(netns=netns) is True
    assert ruleset(netns).strip() == ""
    assert nat.remove_nat(netns=netns) is False


def test_ensure_nat_repairs_tampering_and_follows_config(netns: str) -> None:
    nat.ensure_nat("10.79.0.0/24", "vbr0", netns=netns)
    wanted = ruleset(netns)
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "nft", "flush", "chain", "ip",
                    "volant", "forward"], check=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "nft", "add", "rule", "ip",
                    "volant", "postrouting", "counter"], check=True)
    assert nat.ensure_nat("10.79.0.0/24", "vbr0", netns=netns) is True
    assert ruleset(netns) == wanted
    assert nat.ensure_nat("10.80.0.0/16", "vbr1", netns=netns) is True
    changed = ruleset(netns)
    assert "10.80.0.0/16" in changed and "10.79.0.0" not in changed and '"vbr1"' in changed


def test_other_tables_are_left_alone(netns: str) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "nft", "add", "table", "inet",
                    "someone_else"], check=True)
    nat.ensure_nat("10.79.0.0/24", "vbr0", netns=netns)
    nat.remove_nat(netns=netns)
    assert ruleset(netns).strip() == "table inet someone_else {\n}"


def test_bad_input() -> None:
    with pytest.raises(ValidationError, match="only IPv4"):
        nat.ensure_nat("fd00::/64", "vbr0", netns="unused")
    with pytest.raises(ValidationError, match=r"bridge: .*too long"):
        nat.ensure_nat("10.79.0.0/24", "x" * 16, netns="unused")
    with pytest.raises(ValidationError, match="table"):
        nat.ensure_nat("10.79.0.0/24", "vbr0", table="bad name")


def test_ip_forward_in_namespace(netns: str) -> None:
    assert nat.ip_forward_enabled(netns) is False  # a new namespace starts with it off
    assert nat.ensure_ip_forward(netns) is False
    assert nat.ip_forward_enabled(netns) is True
    assert nat.ensure_ip_forward(netns) is True
    assert nat.set_ip_forward(False, netns) is True
    assert nat.ip_forward_enabled(netns) is False


def test_missing_namespace() -> None:
    with pytest.raises(nat.NftablesError, match="does not exist"):
        nat.nat_rules(netns="vtest-never-created")
