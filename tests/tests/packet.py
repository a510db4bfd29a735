"""Packet sockets (AF_PACKET) as a node: run by tests/tests/packet.rs, with a dnsmasq node
(10.0.9.1, DHCP range 10.0.9.100-150) on the LAN and no IPv4 address of our own. Prints one
line per check; the test reads them."""
import fcntl, random, socket, struct, sys

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
SOL_PACKET, PACKET_AUXDATA = 263, 8


def out(*a):
    print(*a, flush=True)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mac = fcntl.ioctl(u.fileno(), 0x8927, struct.pack("16s24x", b"vde0"))[18:24]  # SIOCGIFHWADDR

r = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
out("type", r.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM,
    "protocol", hex(socket.ntohs(r.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))))
try:
    r.bind(("nosuch0", ETH_P_IP))
    out("bind-unknown 0")
except OSError as e:
    out("bind-unknown", e.errno)
r.bind(("vde0", ETH_P_IP))
n = r.getsockname()
out("name", n[0], hex(n[1]), "hatype", n[3], "own-mac", n[4] == mac)
r.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)

# DHCPDISCOVER without the broadcast flag: dnsmasq answers to our MAC (PACKET_HOST).
xid = random.getrandbits(32)
bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0, b"\0" * 4, b"\0" * 4,
                    b"\0" * 4, b"\0" * 4, mac + b"\0" * 10, b"", b"")
bootp += b"\x63\x82\x53\x63" + bytes([53, 1, 1, 255])
udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
out("sent", r.sendto(ip + udp, ("vde0", ETH_P_IP, 0, 0, b"\xff" * 6)) == len(ip + udp))
r.settimeout(10)
server = None
while server is None:
    data, anc, flags, addr = r.recvmsg(4096, socket.CMSG_SPACE(32))
    if data[9] != 17 or struct.unpack("!H", data[22:24])[0] != 68:
        continue
    b = data[28:]
    if struct.unpack("!I", b[4:8])[0] != xid:
        continue
    server = addr[4]
    out("offer-from", addr[0], hex(addr[1]), "pkttype", addr[2], "hatype", addr[3],
        "halen", len(addr[4]), "not-own", addr[4] != mac)
    out("offer", socket.inet_ntoa(b[16:20]), "ip-csum-ok", csum(data[:20]) == 0,
        "udp-len-ok", struct.unpack("!H", data[24:26])[0] == len(data) - 20)
    aux = [a for a in anc if a[0] == SOL_PACKET and a[1] == PACKET_AUXDATA]
    if aux:
        st, ln, snap = struct.unpack("III", aux[0][2][:12])
        out("auxdata", "user", st & 1, "len-ok", ln == len(data), "snap-ok", snap == len(data))
    else:
        out("auxdata none")

# SOCK_RAW for ARP: a whole frame out, a whole frame back (PACKET_HOST, from the server).
a = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
a.bind(("vde0", ETH_P_ARP))
req = (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + struct.pack("!HHBBH", 1, 0x800, 6, 4, 1)
       + mac + socket.inet_aton("10.0.9.8") + b"\0" * 6 + socket.inet_aton("10.0.9.1"))
a.send(req)
a.settimeout(10)
while True:
    f, addr = a.recvfrom(2048)
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == socket.inet_aton("10.0.9.1"):
        out("arp-reply", "to-own", f[0:6] == mac, "sender-is-server", f[22:28] == server,
            "pkttype", addr[2], "whole-frame", hex(addr[1]))
        break
out("done")
