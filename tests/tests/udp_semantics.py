#!/usr/bin/env python3
"""UDP semantics over ioth (run as a node by tests/tests/udp.rs).

server ADDR4 ADDR6: UDP echo on [ADDR6]:9000, 0.0.0.0:9001 (v4, broadcast target) and [::]:9002
(member of the IPv6 multicast group GROUP), and a TCP echo on [ADDR6]:9000 (same port number
as the UDP socket). Prints "ready".
client SERVER6 SERVER4: checks, one "ok NAME" line each, "all-ok" at the end.
"""
import ctypes
import errno
import fcntl
import os
import select
import socket
import sys
import termios
import threading

PORT = 9000
GROUP = "ff02::9:1"  # link-local scope: sent with the interface's index (1, vde0)


def server(a4, a6):
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.bind((a6, PORT))
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u4.bind(("0.0.0.0", PORT + 1))
    m6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    m6.bind(("::", PORT + 2))
    ifindex = socket.if_nametoindex("vde0")
    mreq = socket.inet_pton(socket.AF_INET6, GROUP) + ifindex.to_bytes(4, sys.byteorder)
    m6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((a6, PORT))
    t.listen(4)

    def tcp():
        while True:
            c, _ = t.accept()
            d = c.recv(100)
            c.sendall(b"tcp:" + d)
            c.close()

    threading.Thread(target=tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        r, _, _ = select.select([u6, u4, m6], [], [])
        for s in r:
            d, a = s.recvfrom(70000)
            if d == b"quit":
                return
            s.sendto(d, a)


def check(name, cond):
    if not cond:
        print("FAIL", name, flush=True)
        sys.exit(1)
    print("ok", name, flush=True)


def client(s6, s4):
    srv = (s6, PORT)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(10)
    # sendto/recvfrom, implicit bind
    s.sendto(b"hello", srv)
    check("autobind", s.getsockname()[1] != 0)
    d, a = s.recvfrom(100)
    check("recvfrom", d == b"hello" and a[0] == s6 and a[1] == PORT)
    # boundaries: three datagrams come back as three, sizes intact
    sizes = [1, 1000, 3000, 0, 60000]
    for n in sizes:
        s.sendto(bytes([n % 251]) * n, srv)
    got = [len(s.recvfrom(70000)[0]) for _ in sizes]
    check("boundaries", got == sizes)
    # MSG_PEEK then read
    s.sendto(b"peekaboo", srv)
    p = s.recv(100, socket.MSG_PEEK)
    d = s.recv(100)
    check("peek", p == d == b"peekaboo")
    # MSG_TRUNC: the real length; recvmsg reports the flag; the rest is dropped
    s.sendto(b"x" * 50, srv)
    n = len(s.recv(10, socket.MSG_PEEK))
    check("short-read", n == 10)
    msg, anc, flags, addr = s.recvmsg(10)
    check("recvmsg-trunc-flag", len(msg) == 10 and flags & socket.MSG_TRUNC and addr[0] == s6)
    s.sendto(b"y" * 50, srv)
    buf = bytearray(10)
    n = s.recv_into(buf, 10, socket.MSG_TRUNC)
    check("msg-trunc-length", n == 50 and bytes(buf) == b"y" * 10)
    # MSG_DONTWAIT on an empty socket (Python polls first on sockets with a timeout)
    s.settimeout(None)
    try:
        s.recv(10, socket.MSG_DONTWAIT)
        check("dontwait", False)
    except BlockingIOError:
        check("dontwait", True)
    s.settimeout(10)
    # FIONREAD: the size of the next datagram (0 when none is queued), as for UDP
    empty = fcntl.ioctl(s, termios.FIONREAD, b"\0" * 4)
    s.sendto(b"f" * 100, srv)
    s.sendto(b"g" * 7, srv)
    select.select([s], [], [], 10)
    first = fcntl.ioctl(s, termios.FIONREAD, b"\0" * 4)
    got = [len(s.recv(200)), len(s.recv(200))]
    check(
        "fionread",
        int.from_bytes(empty, sys.byteorder) == 0
        and int.from_bytes(first, sys.byteorder) == 100
        and got == [100, 7],
    )
    # ICMP port unreachable: an unconnected socket hears nothing (its next datagram is the
    # echo), a connected one fails its next receive with ECONNREFUSED, once
    s.sendto(b"nobody", (s6, PORT + 7))
    s.sendto(b"after", srv)
    check("unconnected-no-error", s.recv(100) == b"after")
    r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    r.settimeout(10)
    r.connect((s6, PORT + 7))
    r.send(b"nobody")
    try:
        r.recv(100)
        check("econnrefused", False)
    except ConnectionRefusedError:
        r.connect(srv)
        r.send(b"again")
        check("econnrefused", r.recv(100) == b"again")
    r.close()
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.settimeout(10)
    r.connect((s4, PORT + 8))
    r.send(b"nobody")
    try:
        r.recv(100)
        check("econnrefused-v4", False)
    except ConnectionRefusedError:
        check("econnrefused-v4", True)
    r.close()
    # send without a destination on an unconnected socket
    try:
        s.send(b"nowhere")
        check("edestaddrreq", False)
    except OSError as e:
        check("edestaddrreq", e.errno == errno.EDESTADDRREQ)
    # connected UDP: send/recv, read/write, getpeername
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c.settimeout(10)
    c.connect(srv)
    check("getpeername", c.getpeername()[:2] == srv)
    c.send(b"conn")
    check("connected-recv", c.recv(100) == b"conn")
    os.write(c.fileno(), b"viawrite")
    select.select([c], [], [], 10)
    check("read-write", os.read(c.fileno(), 100) == b"viawrite")
    os.writev(c.fileno(), [b"ab", b"cd"])
    check("writev", c.recv(100) == b"abcd")
    # exec: the socket inherited by a new program keeps its datagram framing
    import subprocess
    child = subprocess.run(
        [sys.executable, "-c",
         "import os,select,sys; fd=int(sys.argv[1]); os.write(fd, b'from-exec');"
         "select.select([fd],[],[],10); sys.stdout.write(os.read(fd, 100).decode())",
         str(c.fileno())],
        pass_fds=[c.fileno()], capture_output=True, timeout=30)
    check("exec-inherited", child.stdout == b"from-exec")
    # dup2 onto another number
    d2 = os.dup2(c.fileno(), 77)
    os.write(77, b"dup2")
    select.select([c], [], [], 10)
    check("dup2", os.read(77, 100) == b"dup2")
    os.close(77)
    # disconnect with AF_UNSPEC
    sa = (ctypes.c_ushort * 8)()
    sa[0] = socket.AF_UNSPEC
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.connect(c.fileno(), ctypes.byref(sa), 16)
    check("connect-unspec", r == 0)
    try:
        c.getpeername()
        check("disconnected", False)
    except OSError as e:
        check("disconnected", e.errno == errno.ENOTCONN)
    c.sendto(b"again", srv)
    check("after-disconnect", c.recvfrom(100)[0] == b"again")
    # sendmmsg / recvmmsg
    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class msghdr(ctypes.Structure):
        _fields_ = [
            ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
            ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
            ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
            ("flags", ctypes.c_int),
        ]

    class mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

    m = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    m.settimeout(10)
    m.connect(srv)
    payloads = [b"one", b"two!", b"three"]
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(p)) for b, p in zip(bufs, payloads)]
    vec = (mmsghdr * 3)()
    for i in range(3):
        vec[i].hdr.iov = ctypes.pointer(iovs[i])
        vec[i].hdr.iovlen = 1
    n = libc.sendmmsg(m.fileno(), vec, 3, 0)
    check("sendmmsg", n == 3 and [vec[i].len for i in range(3)] == [3, 4, 5])
    # wait until all three echoes are queued, then take them in one call
    rb = [ctypes.create_string_buffer(64) for _ in range(3)]
    riovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 64) for b in rb]
    rvec = (mmsghdr * 3)()
    names = [ctypes.create_string_buffer(28) for _ in range(3)]
    for i in range(3):
        rvec[i].hdr.iov = ctypes.pointer(riovs[i])
        rvec[i].hdr.iovlen = 1
        rvec[i].hdr.name = ctypes.cast(names[i], ctypes.c_void_p)
        rvec[i].hdr.namelen = 28
    total = 0
    got = []
    while total < 3:
        select.select([m], [], [], 10)
        k = libc.recvmmsg(m.fileno(), ctypes.byref(rvec[total]), 3 - total, 0x10000, None)  # MSG_WAITFORONE
        check("recvmmsg-call", k > 0)
        for i in range(total, total + k):
            got.append(rb[i].raw[: rvec[i].len])
        total += k
    check("recvmmsg", got == payloads and rvec[0].hdr.namelen == 28)
    # the same port number over TCP reaches the TCP listener
    t = socket.create_connection(srv, timeout=10)
    t.sendall(b"hi")
    check("tcp-same-port", t.recv(100) == b"tcp:hi")
    t.close()
    # IPv4: broadcast needs SO_BROADCAST
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.settimeout(10)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    bcast = s4.rsplit(".", 1)[0] + ".255"
    b.sendto(b"bcast", (bcast, PORT + 1))
    d, a = b.recvfrom(100)
    check("broadcast", d == b"bcast" and a[0] == s4)
    # IPv6 multicast: a datagram to a group the server joined reaches it. Link-scope
    # destination, so link-local source: the echo comes back from the server's fe80::
    # address, with the interface as its scope, as on Linux.
    m = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    m.settimeout(10)
    ifindex = socket.if_nametoindex("vde0")
    m.sendto(b"mcast", (GROUP, PORT + 2, 0, ifindex))
    d, a = m.recvfrom(100)
    check("multicast6", d == b"mcast" and a[0].startswith("fe80::") and a[3] == ifindex)
    # A raw ICMPv4 socket (busybox ping's): an echo request with our checksum, and the
    # reply with its IPv4 header, from the server.
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    r.settimeout(10)
    body = b"\x08\x00\x00\x00" + (0x4242).to_bytes(2, "big") + (7).to_bytes(2, "big") + b"raw"
    r.sendto(body[:2] + inet_checksum(body).to_bytes(2, "big") + body[4:], (s4, 0))
    while True:
        d, a = r.recvfrom(200)
        hl = (d[0] & 15) * 4
        if d[hl] == 0:
            break
    check(
        "raw-icmp4",
        d[0] >> 4 == 4 and d[9] == 1 and socket.inet_ntoa(d[12:16]) == s4 and a[0] == s4
        and d[hl + 4 : hl + 8] == body[4:8] and d[hl + 8 :] == b"raw",
    )
    r.close()
    s.sendto(b"quit", srv)
    print("all-ok", flush=True)


def inet_checksum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3])
    else:
        client(sys.argv[2], sys.argv[3])
