import hashlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volant.errors import ConflictError, ValidationError
from volant.network.ipam import (
    FIRST_CID,
    IPAM,
    AddressPoolExhausted,
    derive_mac,
    derive_tap_mac,
)

SUBNET = "192.168.127.0/24"
HOST = "192.168.127.1"


def ipam() -> IPAM:
    return IPAM(SUBNET, HOST)


# -- MACs --------------------------------------------------------------------


def test_guest_mac_known_vector() -> None:
    digest = hashlib.sha1(b"web-1|192.168.127.10").digest()
    expected = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
    assert derive_mac("web-1", "192.168.127.10") == expected
    assert derive_mac("web-1", IPv4Address("192.168.127.10")) == expected


def test_guest_mac_without_ip_uses_name_and_bar() -> None:
    digest = hashlib.sha1(b"agent|").digest()
    assert derive_mac("agent", None) == "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def test_tap_mac_differs_and_is_local_unicast() -> None:
    for name in ("web-1", "a", "x" * 63):
        tap = derive_tap_mac(name)
        assert tap != derive_mac(name, None)
        first = int(tap.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01
        assert len(tap.split(":")) == 6


# -- construction ------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "host", "field"),
    [
        ("192.168.127.0/24", "10.0.0.1", "host_ip"),
        ("192.168.127.0/24", "192.168.127.0", "host_ip"),
        ("192.168.127.0/24", "192.168.127.255", "host_ip"),
        ("fd00::/64", "fd00::1", "subnet"),
        ("192.168.127.1/24", "192.168.127.1", "subnet"),
        ("192.168.127.0/31", "192.168.127.0", "subnet"),
    ],
)
def test_bad_construction_names_field(subnet: str, host: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        IPAM(subnet, host)
    assert info.value.details["field"] == field


# -- allocation ----------------------------------------------------------------


def test_lowest_free_in_numeric_order_skipping_host() -> None:
    pool = ipam()
    got = [pool.allocate_ip(f"vm{i}") for i in range(12)]
    assert got[0] == IPv4Address("192.168.127.2")
    assert got == [IPv4Address(f"192.168.127.{i}") for i in range(2, 14)]
    pool.release("vm3")  # holds .5
    pool.release("vm9")  # holds .11
    assert pool.allocate_ip("new-a") == IPv4Address("192.168.127.5")
    assert pool.allocate_ip("new-b") == IPv4Address("192.168.127.11")
    assert pool.allocate_ip("new-c") == IPv4Address("192.168.127.14")


def test_host_ip_in_the_middle_is_skipped() -> None:
    pool = IPAM("10.0.0.0/29", "10.0.0.3")
    got = [str(pool.allocate_ip(f"vm{i}")) for i in range(5)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(AddressPoolExhausted):
        pool.allocate_ip("one-more")


def test_allocation_is_idempotent() -> None:
    pool = ipam()
    first = pool.allocate_ip("web")
    pool.allocate_ip("other")
    assert pool.allocate_ip("web") == first
    assert pool.allocate_ip("web", preferred=first) == first


def test_exhaustion_is_a_clear_409() -> None:
    pool = IPAM("10.1.0.0/30", "10.1.0.1")
    assert pool.capacity == 1
    assert pool.allocate_ip("only") == IPv4Address("10.1.0.2")
    with pytest.raises(AddressPoolExhausted) as info:
        pool.allocate_ip("second")
    assert isinstance(info.value, ConflictError) and info.value.status == 409
    assert "10.1.0.0/30" in info.value.message and "VOLANT_SUBNET" in info.value.message
    pool.release("only")
    assert pool.allocate_ip("second") == IPv4Address("10.1.0.2")


def test_preferred_address_rules() -> None:
    pool = ipam()
    assert pool.allocate_ip("a", preferred="192.168.127.50") == IPv4Address("192.168.127.50")
    with pytest.raises(ConflictError, match="held by VM a"):
        pool.allocate_ip("b", preferred="192.168.127.50")
    for bad in ("192.168.127.0", "192.168.127.255", HOST, "10.0.0.5", "nonsense"):
        with pytest.raises(ValidationError):
            pool.allocate_ip("b", preferred=bad)
    with pytest.raises(ConflictError, match="already holds"):
        pool.allocate_ip("a", preferred="192.168.127.51")
    assert pool.owner_of("192.168.127.50") == "a"
    assert pool.ip_of("b") is None


def test_many_ipless_vms_coexist() -> None:
    pool = ipam()
    cids = [pool.allocate_cid(f"vsock-{i}") for i in range(100)]
    assert cids == list(range(FIRST_CID, FIRST_CID + 100))
    assert pool.ip_allocations() == {}


def test_cids_reuse_lowest_and_are_stable() -> None:
    pool = ipam()
    assert [pool.allocate_cid(n) for n in "abc"] == [3, 4, 5]
    assert pool.allocate_cid("b") == 4
    pool.release("a")
    assert pool.allocate_cid("d") == 3
    assert pool.cid_of("d") == 3 and pool.cid_of("a") is None


# -- rebuild -------------------------------------------------------------------


def test_rebuild_restores_allocations_and_reports_conflicts() -> None:
    pool = ipam()
    pool.allocate_ip("stale")  # gone after rebuild: allocations come only from records
    conflicts = pool.rebuild(
        [
            ("web", "192.168.127.7", 9),
            ("api", None, 3),
            ("dup", "192.168.127.7", 9),
            ("outside", "10.9.9.9", None),
            ("hostclash", HOST, None),
            ("agent", "", 4),
        ]
    )
    assert pool.ip_allocations() == {"web": IPv4Address("192.168.127.7")}
    assert pool.cid_allocations() == {"web": 9, "api": 3, "agent": 4}
    assert {(c.vm_name, c.field) for c in conflicts} == {
        ("dup", "ip"),
        ("dup", "cid"),
        ("outside", "ip"),
        ("hostclash", "ip"),
    }
    assert pool.ip_of("stale") is None
    assert pool.allocate_ip("web") == IPv4Address("192.168.127.7")
    assert pool.allocate_ip("fresh") == IPv4Address("192.168.127.2")
    assert pool.allocate_cid("fresh") == 5


# -- property: any interleaving is safe ---------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "release", "prefer"]), st.integers(0, 11), st.integers(0, 15)
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_interleavings_never_double_allocate(sequence: list[tuple[str, int, int]]) -> None:
    pool = IPAM("10.2.0.0/28", "10.2.0.5")  # 13 usable VM addresses, 12 VM names
    reserved = {IPv4Address("10.2.0.0"), IPv4Address("10.2.0.15"), IPv4Address("10.2.0.5")}
    model: dict[str, IPv4Address] = {}
    for op, vm, host_octet in sequence:
        name = f"vm{vm}"
        if op == "release":
            pool.release(name)
            model.pop(name, None)
            continue
        try:
            if op == "alloc":
                ip = pool.allocate_ip(name)
            else:
                ip = pool.allocate_ip(name, preferred=f"10.2.0.{host_octet}")
        except (ConflictError, ValidationError):
            continue
        if name in model:
            assert ip == model[name]
        elif op == "alloc":
            free = [
                IPv4Address(f"10.2.0.{i}")
                for i in range(1, 15)
                if IPv4Address(f"10.2.0.{i}") not in reserved
                and IPv4Address(f"10.2.0.{i}") not in model.values()
            ]
            assert ip == min(free)
        model[name] = ip
        assert ip not in reserved
        held = list(pool.ip_allocations().values())
        assert len(held) == len(set(held))
        assert pool.ip_allocations() == model
