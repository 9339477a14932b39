"""ip= parsing: the forms volantd emits, the kernel's documented forms, and garbage."""

from __future__ import annotations

import pytest

from kestrel.ipconfig import (
    IpConfigError,
    classful_prefix,
    format_ipv4,
    parse_ip_param,
    parse_ipv4,
    parse_netmask,
)


def test_volantd_bridged_form() -> None:
    ip = parse_ip_param("10.20.0.5::10.20.0.1:255.255.255.0:web-1:eth0:off")
    assert ip.client_ip == "10.20.0.5"
    assert ip.server_ip is None
    assert ip.gateway == "10.20.0.1"
    assert ip.prefix_len == 24
    assert ip.netmask == "255.255.255.0"
    assert ip.hostname == "web-1"
    assert ip.device == "eth0"
    assert ip.static and not ip.dhcp


def test_empty_client_ip_keeps_the_rest() -> None:
    ip = parse_ip_param("::10.20.0.1:255.255.0.0:vm:eth0:off")
    assert ip.client_ip is None
    assert not ip.static
    assert ip.gateway == "10.20.0.1"
    assert ip.prefix_len == 16
    assert ip.hostname == "vm"


def test_full_kernel_form_with_dns() -> None:
    ip = parse_ip_param(
        "192.168.1.9:192.168.1.2:192.168.1.1:255.255.255.128:h:eth1:none:1.1.1.1:8.8.8.8"
    )
    assert ip.server_ip == "192.168.1.2"
    assert ip.prefix_len == 25
    assert ip.device == "eth1"
    assert ip.autoconf == "none"
    assert ip.dns == ("1.1.1.1", "8.8.8.8")


def test_missing_trailing_fields_default() -> None:
    ip = parse_ip_param("10.1.2.3")
    assert ip.client_ip == "10.1.2.3"
    assert ip.prefix_len == 8  # classful, like the kernel
    assert ip.gateway is None
    assert ip.hostname is None
    assert ip.device == "eth0"
    assert ip.autoconf == "off"


@pytest.mark.parametrize(
    ("mask", "prefix"),
    [
        ("255.255.255.0", 24),
        ("24", 24),
        ("/20", 20),
        ("255.255.255.255", 32),
        ("0", 0),
        ("255.0.0.0", 8),
    ],
)
def test_netmask_forms(mask: str, prefix: int) -> None:
    assert parse_netmask(mask) == prefix
    assert parse_ip_param(f"10.0.0.2::10.0.0.1:{mask}").prefix_len == prefix


def test_cidr_client_address() -> None:
    ip = parse_ip_param("172.16.5.4/22::172.16.4.1")
    assert ip.client_ip == "172.16.5.4"
    assert ip.prefix_len == 22
    assert ip.netmask == "255.255.252.0"


@pytest.mark.parametrize("mode", ["dhcp", "on", "any", "DHCP"])
def test_autoconf_only_forms(mode: str) -> None:
    ip = parse_ip_param(mode)
    assert ip.dhcp
    assert ip.client_ip is None


def test_off_form() -> None:
    ip = parse_ip_param("off")
    assert not ip.dhcp and not ip.static


def test_dhcp_field_wins_over_address() -> None:
    assert parse_ip_param(":::::eth0:dhcp").dhcp


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.300::10.0.0.1:255.255.255.0", "client address"),
        ("10.0.0.3::gateway:255.255.255.0", "gateway"),
        ("10.0.0.3::10.0.0.1:255.0.255.0", "not contiguous"),
        ("10.0.0.3::10.0.0.1:33", "out of range"),
        ("10.0.0.3::10.0.0.1:banana", "netmask"),
        ("10.0.0.3::10.0.0.1:24:h:eth0:sometimes", "autoconf"),
        ("1:2:3:4:5:6:7:8:9:10:11", "too many fields"),
        ("10.0.0.3::10.0.0.1:24:h:this-name-is-way-too-long:off", "device name"),
        ("hello world", "client address"),
    ],
)
def test_garbage_gives_a_clear_error(value: str, fragment: str) -> None:
    with pytest.raises(IpConfigError, match=fragment):
        parse_ip_param(value)


def test_classful_prefix() -> None:
    assert classful_prefix("10.0.0.1") == 8
    assert classful_prefix("172.16.0.1") == 16
    assert classful_prefix("192.168.0.1") == 24


@pytest.mark.parametrize(
    "text", ["1.2.3", "1.2.3.4.5", "1.2.3.256", "01.2.3.4", "a.b.c.d", "1.2.3.-4", "\u0661.2.3.4"]
)
def test_strict_dotted_quad(text: str) -> None:
    with pytest.raises(ValueError, match=r"IPv4|octet|leading zero"):
        parse_ipv4(text)


def test_ipv4_round_trip() -> None:
    assert format_ipv4(parse_ipv4("10.0.255.7")) == "10.0.255.7"
    assert parse_ipv4("0.0.0.1") == 1
