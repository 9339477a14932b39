import pytest

from volant.errors import ValidationError
from volant.network.modes import NetworkMode, parse_mode


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        (None, NetworkMode.BRIDGED),
        ("", NetworkMode.BRIDGED),
        ("DHCP", NetworkMode.DHCP),
        (" vsock ", NetworkMode.VSOCK),
        ("Bridged", NetworkMode.BRIDGED),
    ],
)
def test_parse(raw: str | None, mode: NetworkMode) -> None:
    assert parse_mode(raw) is mode


def test_unknown_mode_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"network\.mode.*bridged, dhcp, vsock"):
        parse_mode("macvtap")


def test_needs() -> None:
    assert NetworkMode.BRIDGED.needs_tap and NetworkMode.BRIDGED.ip_on_cmdline
    assert NetworkMode.DHCP.needs_tap and NetworkMode.DHCP.needs_ip
    assert not NetworkMode.DHCP.ip_on_cmdline
    assert not NetworkMode.VSOCK.needs_tap and not NetworkMode.VSOCK.needs_ip
