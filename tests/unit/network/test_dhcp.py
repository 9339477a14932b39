import contextlib
import struct
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volant.network import dhcp
from volant.network.dhcp import DhcpDecodeError, DhcpMessage, Lease, Responder

SERVER = IPv4Address("10.90.0.1")
NET = IPv4Network("10.90.0.0/24")
KNOWN_MAC = "02:aa:bb:cc:dd:01"
KNOWN = {KNOWN_MAC: Lease(IPv4Address("10.90.0.7"), hostname="web-1")}


def responder(**kw: object) -> Responder:
    return Responder(server_ip=SERVER, subnet=NET, lookup=KNOWN.get, **kw)  # type: ignore[arg-type]


def client_packet(kind: int, mac: str = KNOWN_MAC, xid: int = 0x1234, **opts: bytes) -> bytes:
    """A request built by hand (not with our encoder) so decode is tested independently."""
    chaddr = bytes(int(x, 16) for x in mac.split(":")).ljust(16, b"\0")
    fixed = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + b"\0" * 16 + chaddr
    fixed += b"\0" * 192
    body = bytes([53, 1, kind])
    for code, value in opts.items():
        body += bytes([int(code[1:]), len(value)]) + value
    return fixed + b"\x63\x82\x53\x63" + body + b"\xff"


def test_decode_handmade_discover() -> None:
    msg = dhcp.decode(client_packet(dhcp.DISCOVER, o12=b"web"))
    assert msg.op == 1 and msg.xid == 0x1234 and msg.chaddr == KNOWN_MAC
    assert msg.message_type == dhcp.DISCOVER and msg.options[12] == b"web"
    assert msg.flags == 0x8000


def test_offer_carries_lease_mask_router_and_hostname() -> None:
    offer = responder().handle(dhcp.decode(client_packet(dhcp.DISCOVER)))
    assert offer is not None and offer.message_type == dhcp.OFFER
    assert offer.yiaddr == IPv4Address("10.90.0.7") and offer.xid == 0x1234
    wire = dhcp.encode(offer)
    assert wire[0] == 2 and len(wire) >= 300
    back = dhcp.decode(wire)
    assert back.ip_option(dhcp.OPT_SUBNET_MASK) == IPv4Address("255.255.255.0")
    assert back.ip_option(dhcp.OPT_ROUTER) == SERVER
    assert back.ip_option(dhcp.OPT_SERVER_ID) == SERVER
    assert struct.unpack("!I", back.options[dhcp.OPT_LEASE_TIME]) == (3600,)
    assert back.options[dhcp.OPT_HOSTNAME] == b"web-1"
    assert dhcp.reply_destination(dhcp.decode(client_packet(dhcp.DISCOVER)), offer) == (
        "255.255.255.255", 68)


def test_request_for_our_address_is_acked_other_is_nakked() -> None:
    r = responder()
    ack = r.handle(dhcp.decode(client_packet(
        dhcp.REQUEST, o50=IPv4Address("10.90.0.7").packed, o54=SERVER.packed)))
    assert ack is not None and ack.message_type == dhcp.ACK
    assert ack.yiaddr == IPv4Address("10.90.0.7")
    nak = r.handle(dhcp.decode(client_packet(dhcp.REQUEST, o50=IPv4Address("10.90.0.9").packed)))
    assert nak is not None and nak.message_type == dhcp.NAK and int(nak.yiaddr) == 0
    other_server = r.handle(dhcp.decode(client_packet(
        dhcp.REQUEST, o50=IPv4Address("10.90.0.7").packed, o54=IPv4Address("10.90.0.2").packed)))
    assert other_server is None


def test_unknown_macs_and_other_types_get_no_answer() -> None:
    r = responder()
    assert r.handle(dhcp.decode(client_packet(dhcp.DISCOVER, mac="02:00:00:00:00:99"))) is None
    for kind in (dhcp.RELEASE, dhcp.DECLINE, dhcp.INFORM):
        assert r.handle(dhcp.decode(client_packet(kind))) is None


def test_renewal_is_unicast_to_the_client() -> None:
    request = DhcpMessage(op=1, xid=5, chaddr=KNOWN_MAC, ciaddr=IPv4Address("10.90.0.7"),
                          options={dhcp.OPT_MESSAGE_TYPE: bytes([dhcp.REQUEST])})
    ack = responder().handle(request)
    assert ack is not None and ack.message_type == dhcp.ACK
    assert dhcp.reply_destination(request, ack) == ("10.90.0.7", 68)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01" * 100,
        client_packet(dhcp.DISCOVER)[:-1],  # no END
        client_packet(dhcp.DISCOVER)[:236] + b"\0\0\0\0\xff",  # bad cookie
        client_packet(dhcp.DISCOVER)[:-1] + b"\x0c\x10ab",  # option overruns
        b"\x07" + client_packet(dhcp.DISCOVER)[1:],  # bad op
    ],
)
def test_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(DhcpDecodeError):
        dhcp.decode(data)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_decoder_never_crashes_otherwise(data: bytes) -> None:
    with contextlib.suppress(DhcpDecodeError):
        dhcp.decode(data)


@settings(max_examples=200)
@given(
    st.integers(0, 2**32 - 1),
    st.dictionaries(st.integers(1, 254), st.binary(max_size=600), max_size=6),
)
def test_encode_decode_round_trip(xid: int, options: dict[int, bytes]) -> None:
    msg = DhcpMessage(op=2, xid=xid, chaddr="fe:01:02:03:04:05", options=options,
                      yiaddr=IPv4Address("10.90.0.3"))
    back = dhcp.decode(dhcp.encode(msg))
    assert back.xid == xid and back.yiaddr == msg.yiaddr and back.chaddr == msg.chaddr
    assert {k: v for k, v in back.options.items() if v} == {k: v for k, v in options.items() if v}
