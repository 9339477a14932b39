"""nftables adapter: our own ``ip <table>`` with masquerade and forward rules.

Talks to the ``nft`` CLI in JSON mode (``nft -j -f -`` to apply, ``nft -j list
table`` to measure); nothing else on the host is touched: the whole state lives
in one table we own, so removing it undoes everything. Inside a network
namespace the command runs under ``nsenter --net=/run/netns/<name>``.

``ensure_nat`` measures first and only acts when the table differs from the
wanted one; acting is one atomic transaction that recreates the table (``add``,
``delete``, then the full contents), so running it twice leaves exactly the
same ruleset and a half-applied table can never be observed.

Note on the forward chain: an ``accept`` in one nftables table does not override
a ``drop`` in another table's chain on the same hook (e.g. Docker's FORWARD
policy), so the forward rules help on hosts without such policies only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import attrs

from volant.errors import UnavailableError, ValidationError
from volant.network.links import validate_ifname

DEFAULT_TABLE = "volant"
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NFT_TIMEOUT = 15.0
_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


class NftablesError(UnavailableError):
    """``nft`` is missing or refused our ruleset (503)."""


@attrs.frozen
class NatTable:
    """What our table holds right now, as nft reports it (handles stripped)."""

    present: bool
    chains: tuple[dict[str, Any], ...] = ()
    rules: tuple[dict[str, Any], ...] = ()

    def rules_in(self, chain: str) -> list[dict[str, Any]]:
        return [rule for rule in self.rules if rule["chain"] == chain]


def _prefix(netns: str | None) -> list[str]:
    if not netns:
        return []
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise NftablesError(f"network namespace {netns!r} does not exist", netns=netns)
    return ["nsenter", f"--net={path}"]


def _nft(args: list[str], netns: str | None, stdin: str | None = None) -> str:
    if shutil.which("nft") is None:
        raise NftablesError("the nft command is missing: install the nftables package")
    try:
        proc = subprocess.run(
            [*_prefix(netns), "nft", *args], input=stdin, capture_output=True, text=True,
            timeout=_NFT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise NftablesError(f"nft {' '.join(args)} timed out") from None
    if proc.returncode != 0:
        raise NftablesError(
            f"nft {' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}",
            returncode=proc.returncode,
        )
    return proc.stdout


def _check(table: str, subnet: str | None = None, bridge: str | None = None) -> str | None:
    if not _TABLE.match(table):
        raise ValidationError(f"invalid nftables table name {table!r}", field="table")
    if bridge is not None:
        validate_ifname(bridge, "bridge")
    if subnet is None:
        return None
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise ValidationError(f"subnet: invalid subnet {subnet!r}: {exc}", field="subnet") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValidationError(f"subnet: only IPv4 is supported, got {subnet}", field="subnet")
    return str(net)


def desired_objects(table: str, subnet: str, bridge: str) -> list[dict[str, Any]]:
    """The table's full contents in nft JSON (the same shape ``nft -j list`` prints)."""
    net = ipaddress.IPv4Network(subnet)
    base = {"family": "ip", "table": table}

    def iface(key: str, op: str) -> dict[str, Any]:
        return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": bridge}}

    return [
        {"table": {"family": "ip", "name": table}},
        {"chain": {**base, "name": "postrouting", "type": "nat", "hook": "postrouting",
                   "prio": 100, "policy": "accept"}},
        {"chain": {**base, "name": "forward", "type": "filter", "hook": "forward",
                   "prio": 0, "policy": "accept"}},
        {"rule": {**base, "chain": "postrouting", "comment": "volant masquerade", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": str(net.network_address),
                                            "len": net.prefixlen}}}},
            iface("oifname", "!="),
            {"masquerade": None},
        ]}},
        {"rule": {**base, "chain": "forward", "expr": [iface("iifname", "=="), {"accept": None}]}},
        {"rule": {**base, "chain": "forward", "expr": [iface("oifname", "=="), {"accept": None}]}},
    ]


def _strip(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        if "metainfo" in obj:
            continue
        ((kind, body),) = obj.items()
        out.append({kind: {k: v for k, v in body.items() if k != "handle"}})
    return out


def _listed(table: str, netns: str | None) -> list[dict[str, Any]] | None:
    try:
        out = _nft(["-j", "list", "table", "ip", table], netns)
    except NftablesError as exc:
        if "No such file or directory" in exc.message:
            return None
        raise
    return _strip(json.loads(out).get("nftables", []))


def nat_rules(table: str = DEFAULT_TABLE, netns: str | None = None) -> NatTable:
    """Inspect our table (``present=False`` if it does not exist)."""
    _check(table)
    objects = _listed(table, netns)
    if objects is None:
        return NatTable(present=False)
    return NatTable(
        present=True,
        chains=tuple(o["chain"] for o in objects if "chain" in o),
        rules=tuple(o["rule"] for o in objects if "rule" in o),
    )


def ensure_nat(
    subnet: str, bridge: str, table: str = DEFAULT_TABLE, netns: str | None = None
) -> bool:
    """Make our table hold exactly the masquerade + forward rules. Returns whether it acted."""
    net = _check(table, subnet, bridge)
    assert net is not None
    wanted = desired_objects(table, net, bridge)
    if _listed(table, netns) == wanted:
        return False
    ident = {"family": "ip", "name": table}
    batch = [{"add": {"table": ident}}, {"delete": {"table": ident}}]
    batch += [{"add": obj} for obj in wanted]
    _nft(["-j", "-f", "-"], netns, stdin=json.dumps({"nftables": batch}))
    return True


def remove_nat(table: str = DEFAULT_TABLE, netns: str | None = None) -> bool:
    """Delete our table (absent is fine). Returns whether it existed."""
    _check(table)
    if _listed(table, netns) is None:
        return False
    ident = {"family": "ip", "name": table}
    batch = [{"add": {"table": ident}}, {"delete": {"table": ident}}]
    _nft(["-j", "-f", "-"], netns, stdin=json.dumps({"nftables": batch}))
    return True


# -- IPv4 forwarding ------------------------------------------------------------

_WRITE_FORWARD = (
    "import sys\n"
    "p = '/proc/sys/net/ipv4/ip_forward'\n"
    "old = open(p).read().strip()\n"
    "open(p, 'w').write(sys.argv[1])\n"
    "print(old)\n"
)


def set_ip_forward(enabled: bool, netns: str | None = None) -> bool:
    """Set ``net.ipv4.ip_forward``; returns the previous value (for an exact teardown).

    ``/proc/sys/net`` shows the namespace of the *reading process*, so for a
    namespace a short-lived interpreter is started under ``nsenter``.
    """
    value = "1" if enabled else "0"
    if not netns:
        with open(_IP_FORWARD) as fh:
            old = fh.read().strip()
        with open(_IP_FORWARD, "w") as fh:
            fh.write(value)
        return old == "1"
    try:
        proc = subprocess.run(
            [*_prefix(netns), sys.executable, "-I", "-c", _WRITE_FORWARD, value],
            capture_output=True, text=True, timeout=_NFT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise NftablesError("setting ip_forward timed out") from None
    if proc.returncode != 0:
        raise NftablesError(f"cannot set ip_forward in {netns}: {proc.stderr.strip()}")
    return proc.stdout.strip() == "1"


def ensure_ip_forward(netns: str | None = None) -> bool:
    """Enable IPv4 forwarding; returns whether it was already on."""
    return set_ip_forward(True, netns)


def ip_forward_enabled(netns: str | None = None) -> bool:
    if not netns:
        with open(_IP_FORWARD) as fh:
            return fh.read().strip() == "1"
    proc = subprocess.run(
        [*_prefix(netns), "cat", _IP_FORWARD], capture_output=True, text=True,
        timeout=_NFT_TIMEOUT, check=False,
    )
    if proc.returncode != 0:
        raise NftablesError(f"cannot read ip_forward in {netns}: {proc.stderr.strip()}")
    return proc.stdout.strip() == "1"
