import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from volant.network.tapname import MAX_IFNAME, is_our_tap, tap_name

dns_labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def test_upstream_collision_pair_is_distinct() -> None:
    assert tap_name("web-1") != tap_name("web1")


def test_deterministic_and_readable() -> None:
    name = tap_name("database-primary")
    assert name == tap_name("database-primary")
    assert name.startswith("vtdata-")
    assert len(name) == MAX_IFNAME


def test_is_our_tap_recognises_only_our_shape() -> None:
    assert is_our_tap(tap_name("a"))
    assert is_our_tap(tap_name("web-1"))
    for foreign in ("vbr0", "eth0", "vttap-web1", "tap0", "vt-abc", "vtweb1-ABCDEFGH", ""):
        assert not is_our_tap(foreign), foreign


@settings(max_examples=300)
@given(dns_labels)
def test_shape(vm_name: str) -> None:
    name = tap_name(vm_name)
    assert len(name) <= MAX_IFNAME
    assert re.fullmatch(r"[a-z0-9-]+", name)
    assert is_our_tap(name)


def random_label(rng: random.Random) -> str:
    length = rng.choice([1, 2, 3, 4, 5, 8, 12, 20, 63])
    body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(length))
    return body.strip("-") or "x"


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**64))
def test_no_collisions(seed: int) -> None:
    rng = random.Random(seed)
    names = {random_label(rng) for _ in range(3000)}
    taps = {tap_name(n) for n in names}
    assert len(taps) == len(names)


def test_no_collisions_among_near_identical_names() -> None:
    names = [f"web-{i}" for i in range(2000)] + [f"web{i}" for i in range(2000)]
    names += [f"w-e-b-{i}" for i in range(2000)]
    assert len({tap_name(n) for n in names}) == len(names)
