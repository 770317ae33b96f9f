#!/usr/bin/env python3
"""Writes the binary seed corpora of the netlink fuzz targets (Fuzz/Corpus/rtnetlink, wireguard).

The rtnetlink seeds are the golden captures of Tests/NetlinkTests/Fixtures plus one message of
each kind the decoders read (link, address, netconf, traffic control, done, acks), built here
with the kernel's layouts; the wireguard seeds are WG_CMD_GET_DEVICE replies, one of them split
across two messages as the kernel splits a peer whose allowed IPs do not fit. Run from the
repository root after changing a fixture: python3 Fuzz/seeds.py
"""
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NLM_F_MULTI, NLA_F_NESTED = 0x2, 0x8000


def align(data):
    return data + b"\0" * (-len(data) % 4)


def attr(kind, payload):
    return align(struct.pack("<HH", 4 + len(payload), kind) + payload)


def nest(kind, *attrs):
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u8(kind, v): return attr(kind, struct.pack("<B", v))
def u16(kind, v): return attr(kind, struct.pack("<H", v))
def u32(kind, v): return attr(kind, struct.pack("<I", v))
def u64(kind, v): return attr(kind, struct.pack("<Q", v))
def string(kind, s): return attr(kind, s.encode() + b"\0")


def message(kind, body, flags=0, seq=1):
    return struct.pack("<IHHII", 16 + len(body), kind, flags, seq, 0) + align(body)


def ipv6(text):
    import ipaddress
    return ipaddress.IPv6Address(text).packed


def write(target, name, data):
    directory = os.path.join(ROOT, "Fuzz", "Corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def rtnetlink():
    fixtures = os.path.join(ROOT, "Tests", "NetlinkTests", "Fixtures")
    for name in sorted(os.listdir(fixtures)):
        if name.endswith(".hex"):
            with open(os.path.join(fixtures, name)) as f:
                text = " ".join(line for line in f if not line.startswith("#"))
            write("rtnetlink", "fixture-" + name[:-4], bytes(int(b, 16) for b in text.split()))
    ifinfomsg = struct.pack("<BBHiII", 0, 0, 1, 7, 0x1043, 0)
    link = message(16, ifinfomsg + string(3, "wg0") + u32(4, 1420) + nest(18, string(1, "wireguard")), NLM_F_MULTI)
    ifaddrmsg = struct.pack("<BBBBI", 10, 64, 0x80, 0, 7)
    address = message(20, ifaddrmsg + attr(1, ipv6("2001:db8:1::1")) + attr(2, ipv6("2001:db8:1::1")) + u32(8, 0x80))
    netconf = message(80, struct.pack("<Bxxx", 10) + u32(1, 7) + u32(2, 1) + u32(5, 1))
    tcmsg = struct.pack("<BBHiIII", 0, 0, 0, 7, 0xffff0000, 0xfffffff1, 0)
    qdisc = message(36, tcmsg + string(1, "clsact"))
    done = message(3, struct.pack("<i", 0), NLM_F_MULTI)
    # NLMSG_ERROR, capped, with an extended-ack message (NLM_F_CAPPED | NLM_F_ACK_TLVS).
    error = message(2, struct.pack("<i", -17) + struct.pack("<IHHII", 28, 24, 0x405, 1, 0)
                    + string(1, "File exists"), 0x300)
    write("rtnetlink", "link-event", link)
    write("rtnetlink", "address-event", address)
    write("rtnetlink", "netconf-event", netconf)
    write("rtnetlink", "qdisc-event", qdisc)
    write("rtnetlink", "dump-links-done", link + link + done)
    write("rtnetlink", "error-capped-extack", error)


def wireguard():
    version = struct.pack("<BBH", 0, 1, 0)  # genlmsghdr: WG_CMD_GET_DEVICE, version 1
    family = 0x1c

    def allowed(prefix, length):
        return nest(0, u16(1, 10), attr(2, ipv6(prefix)), u8(3, length))

    def peer(key, *ips, full=True):
        attrs = [attr(1, bytes([key]) * 32)]
        if full:
            endpoint = struct.pack("<HHI", 10, 0, 0)[:2] + struct.pack(">H", 51820) + b"\0" * 4 + ipv6("2001:db8:ff::2") + b"\0" * 4
            attrs += [attr(2, b"\0" * 32), attr(4, endpoint), u16(5, 25),
                      attr(6, struct.pack("<qq", 1700000000, 5)), u64(7, 1234), u64(8, 5678)]
        return nest(0, *attrs, nest(9, *ips))

    device = version + u32(1, 7) + string(2, "wg0") + attr(3, b"\x11" * 32) + attr(4, b"\x22" * 32) + u16(6, 51820) + u32(7, 0)
    one = message(family, device + nest(8, peer(0x33, allowed("2001:db8:1::100", 128)),
                                         peer(0x44, allowed("2001:db8:1::200", 128), allowed("2001:db8:2::", 64))), NLM_F_MULTI)
    write("wireguard", "device-two-peers", one + message(3, struct.pack("<i", 0), NLM_F_MULTI))
    first = message(family, device + nest(8, peer(0x33, allowed("2001:db8:1::100", 128))), NLM_F_MULTI)
    more = message(family, version + u32(1, 7) + string(2, "wg0")
                   + nest(8, peer(0x33, allowed("2001:db8:1::101", 128), full=False)), NLM_F_MULTI)
    write("wireguard", "device-peer-continued", first + more)
    write("wireguard", "device-no-peers", message(family, device, NLM_F_MULTI))


rtnetlink()
wireguard()
