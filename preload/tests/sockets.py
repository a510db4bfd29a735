#!/usr/bin/env python3
"""TCP socket semantics of virtual sockets, each case checked against what Linux does.

`sockets.py server` runs as one node (dual-stack listener on port 7000 serving a command per
connection, and a slow-accepting listener on 7001). `sockets.py CASE SERVER SELF` runs one
case as another node (SELF: the client node's own address of the same family) and prints
`ok CASE`; any failure raises. Calls whose exact errno matters go through ctypes, so that
Python's own retry logic (PEP 475) cannot hide what the C library returns.
"""
import ctypes, errno, fcntl, os, select, signal, socket, struct, sys, termios, threading, time

PORT = 7000
SLOW = 7001
V6ONLY = 7002  # the server's IPv6-only listener
REUSE = 7003  # two listeners sharing the port (SO_REUSEPORT), answering b"a" and b"b"
SERVER4 = "10.0.0.10"  # the server node's IPv4 address (sockets.rs)
libc = ctypes.CDLL(None, use_errno=True)


# ------------------------------------------------------------------------------ server

def readline(c):
    cmd = b""
    while not cmd.endswith(b"\n"):
        b = c.recv(1)
        if not b:
            break
        cmd += b
    return cmd.strip().decode()


def serve_conn(c):
    cmd = readline(c)
    if cmd == "echo":
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()
    elif cmd == "close":
        c.close()
    elif cmd == "shutwr":
        c.sendall(b"bye")
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
        c.close()
    elif cmd == "info":
        fl = fcntl.fcntl(c.fileno(), fcntl.F_GETFL)
        fd = fcntl.fcntl(c.fileno(), fcntl.F_GETFD)
        peer, me = c.getpeername(), c.getsockname()
        c.sendall(f"{peer[0]} {peer[1]} {me[0]} {me[1]} {int(bool(fl & os.O_NONBLOCK))} "
                  f"{int(bool(fd & fcntl.FD_CLOEXEC))}\n".encode())
        c.recv(1)
        c.close()
    elif cmd == "rst":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    elif cmd == "hold":
        time.sleep(120)
    elif cmd == "cycle":
        # The second REUSE listener closes, and a new one takes its place.
        with REUSERS_LOCK:
            stop, t = REUSERS.pop()
            stop.set()
            t.join()
            REUSERS.append(reuse_listener(b"b"))
        c.sendall(b"ok")
        c.close()
    else:
        c.close()


def reuse_listener(tag):
    """A dual-stack listener on REUSE that shares the port, answers `tag` to each connection and
    closes it; returns (stop, thread): set stop and join the thread to close the listener."""
    l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    l.bind(("::", REUSE))
    l.listen(64)
    l.setblocking(False)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            if select.select([l], [], [], 0.05)[0]:
                try:
                    c, _ = l.accept()
                except BlockingIOError:
                    continue
                c.setblocking(True)
                c.sendall(tag)
                c.close()
        l.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop, t


REUSERS = []
REUSERS_LOCK = threading.Lock()


def slow_accept(l):
    while True:
        c, _ = l.accept()
        time.sleep(0.01)
        c.sendall(b"k")
        c.close()


def server():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", PORT))
    s.listen(64)
    slow = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    slow.bind(("::", SLOW))
    slow.listen(128)
    threading.Thread(target=slow_accept, args=(slow,), daemon=True).start()
    only6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    only6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    only6.bind(("::", V6ONLY))
    only6.listen(16)
    threading.Thread(target=slow_accept, args=(only6,), daemon=True).start()
    REUSERS.extend([reuse_listener(b"a"), reuse_listener(b"b")])
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


# ------------------------------------------------------------------------------ helpers

def fam(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def absent(host):
    return "fd00::99" if ":" in host else "10.0.0.99"


def conn(host, cmd, port=PORT):
    c = socket.create_connection((host, port))
    c.sendall(cmd.encode() + b"\n")
    return c


def recv_all(c):
    out = b""
    while True:
        d = c.recv(65536)
        if not d:
            return out
        out += d


def recv_n(c, n):
    out = b""
    while len(out) < n:
        d = c.recv(n - len(out))
        assert d, f"EOF after {out!r}"
        out += d
    return out


def sockaddr(host, port):
    """A C sockaddr for (host, port), as bytes."""
    if ":" in host:
        return (struct.pack("H", socket.AF_INET6)
                + struct.pack("!HI16s", port, 0, socket.inet_pton(socket.AF_INET6, host))
                + struct.pack("I", 0))
    return struct.pack("H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(host))


def c_connect(s, host, port):
    """connect(2) through the C library; (return value, errno, seconds)."""
    sa = sockaddr(host, port)
    t = time.time()
    r = libc.connect(s.fileno(), ctypes.c_char_p(sa), len(sa))
    return r, ctypes.get_errno(), time.time() - t


def c_accept4(fd, flags=None):
    buf = ctypes.create_string_buffer(128)
    ln = ctypes.c_uint32(128)
    if flags is None:
        r = libc.accept(fd, buf, ctypes.byref(ln))
    else:
        r = libc.accept4(fd, buf, ctypes.byref(ln), flags)
    return r, ctypes.get_errno(), buf.raw[:ln.value]


def flags_of(fd):
    return (bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK),
            bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))


def name(e):
    return errno.errorcode.get(e, e)


# ------------------------------------------------------------------------------ cases

def case_nonblocking_connect(host, me):
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex((host, PORT))
    assert e == errno.EINPROGRESS, name(e)
    e = s.connect_ex((host, PORT))
    assert e in (errno.EALREADY, errno.EISCONN), name(e)
    _, w, _ = select.select([], [s], [], 20)
    assert w, "connect did not complete"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    e = s.connect_ex((host, PORT))
    assert e == errno.EISCONN, name(e)
    s.setblocking(True)
    s.sendall(b"echo\nxyz")
    assert recv_n(s, 3) == b"xyz"
    s.close()
    # Writable only once established: towards an absent address it stays in progress.
    a = socket.socket(fam(host), socket.SOCK_STREAM)
    a.setblocking(False)
    assert a.connect_ex((absent(host), 80)) == errno.EINPROGRESS
    _, w, _ = select.select([], [a], [], 1.0)
    assert not w, "writable before the handshake ended"
    e = a.connect_ex((absent(host), 80))
    assert e == errno.EALREADY, name(e)
    a.close()


def case_blocking_connect(host, me):
    r, e, _ = c_connect(socket.socket(fam(host)), host, PORT)
    assert r == 0, name(e)
    s = socket.create_connection((host, PORT))
    assert s.getpeername()[:2] == (host, PORT), s.getpeername()
    assert s.getsockname()[0] == me, (s.getsockname(), me)
    s.sendall(b"echo\nabc")
    assert recv_n(s, 3) == b"abc"
    s.close()


def case_econnrefused(host, me):
    r = socket.socket(fam(host), socket.SOCK_STREAM)
    rv, e, _ = c_connect(r, host, PORT + 5)
    assert rv == -1 and e == errno.ECONNREFUSED, name(e)
    r.close()
    r = socket.socket(fam(host), socket.SOCK_STREAM)
    r.setblocking(False)
    assert r.connect_ex((host, PORT + 5)) == errno.EINPROGRESS
    _, w, _ = select.select([], [r], [], 20)
    assert w
    e = r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert e == errno.ECONNREFUSED, name(e)
    # The socket lives on until closed: more questions are answered, not EBADF.
    for _ in range(20):
        r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        r.getsockname()
        try:
            r.getpeername()
            raise AssertionError("getpeername after a refused connect")
        except OSError as x:
            assert x.errno == errno.ENOTCONN, x
    r.close()


def case_unreachable(host, me):
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    rv, e, dt = c_connect(s, absent(host), 80)
    assert rv == -1 and e in (errno.EHOSTUNREACH, errno.ETIMEDOUT), name(e)
    assert dt < 30, dt
    s.close()
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    s.setblocking(False)
    t = time.time()
    assert s.connect_ex((absent(host), 80)) == errno.EINPROGRESS
    _, w, _ = select.select([], [s], [], 40)
    assert w and time.time() - t < 30
    e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert e in (errno.EHOSTUNREACH, errno.ETIMEDOUT), name(e)


def case_backlog(host, me):
    n = 200
    socks = []
    for _ in range(n):
        s = socket.socket(fam(host), socket.SOCK_STREAM)
        s.setblocking(False)
        assert s.connect_ex((host, SLOW)) == errno.EINPROGRESS
        socks.append(s)
    waiting = {s.fileno(): s for s in socks}
    p = select.poll()
    for fd in waiting:
        p.register(fd, select.POLLOUT)
    deadline = time.time() + 60
    while waiting:
        assert time.time() < deadline, f"{len(waiting)} connects unfinished"
        for fd, ev in p.poll(1000):
            s = waiting.pop(fd)
            p.unregister(fd)
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            assert e == 0, name(e)
    for s in socks:
        s.setblocking(True)
        s.settimeout(60)
        assert s.recv(1) == b"k"
        s.close()


def case_accept_flags(host, me):
    l = socket.socket(fam(me), socket.SOCK_STREAM)
    l.bind((me, 0))
    l.listen(8)
    port = l.getsockname()[1]
    lfd = l.fileno()
    # Empty non-blocking listener: EAGAIN.
    l.setblocking(False)
    r, e, _ = c_accept4(lfd, 0)
    assert r == -1 and e == errno.EAGAIN, name(e)
    l.setblocking(True)
    c1 = socket.create_connection((me, port))
    r, e, addr = c_accept4(lfd, socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    assert r >= 0, name(e)
    assert flags_of(r) == (True, True), flags_of(r)
    want_len = 28 if fam(me) == socket.AF_INET6 else 16
    assert len(addr) == want_len, addr
    assert struct.unpack("H", addr[:2])[0] == fam(me)
    assert struct.unpack("!H", addr[2:4])[0] == c1.getsockname()[1]
    c2 = socket.create_connection((me, port))
    r2, e, _ = c_accept4(lfd)
    assert r2 >= 0, name(e)
    assert flags_of(r2) == (False, False), flags_of(r2)
    # accept on a connected socket, on a fresh one, bad flags: EINVAL; data untouched.
    os.write(r2, b"data")
    for fd, fl in ((c2.fileno(), None), (c2.fileno(), 0), (lfd, 0x40000000)):
        rv, e, _ = c_accept4(fd, fl)
        assert rv == -1 and e == errno.EINVAL, (fd, fl, name(e))
    fresh = socket.socket(fam(me), socket.SOCK_STREAM)
    rv, e, _ = c_accept4(fresh.fileno())
    assert rv == -1 and e == errno.EINVAL, name(e)
    assert recv_n(c2, 4) == b"data"
    assert c2.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    assert l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    for fd in (r, r2):
        os.close(fd)


def case_names(host, me):
    # Client view, and the server's view of the same connection.
    c = conn(host, "info")
    line = c.makefile("rb").readline().decode().split()
    mine, peer = c.getsockname(), c.getpeername()
    assert peer[:2] == (host, PORT), peer
    assert mine[0] == me, (mine, me)
    if fam(host) == socket.AF_INET:
        # A dual-stack listener sees IPv4 peers as v4-mapped addresses.
        assert line[0] == "::ffff:" + me and line[2] == "::ffff:" + host, line
    else:
        assert line[0] == me and line[2] == host, line
    assert int(line[1]) == mine[1] and int(line[3]) == PORT, line
    assert line[4] == "0" and line[5] == "1", "accept gives blocking, close-on-exec: %s" % line
    c.send(b"x")
    c.close()
    # An AF_INET6 socket reaching an IPv4 peer through a v4-mapped address.
    if fam(host) == socket.AF_INET:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.connect(("::ffff:" + host, PORT))
        assert s.getpeername()[:2] == ("::ffff:" + host, PORT), s.getpeername()
        assert s.getsockname()[0] == "::ffff:" + me, s.getsockname()
        s.sendall(b"echo\nm")
        assert s.recv(1) == b"m"
        s.close()
    # Unbound and unconnected.
    u = socket.socket(fam(host), socket.SOCK_STREAM)
    assert u.getsockname()[1] == 0
    try:
        u.getpeername()
        raise AssertionError("getpeername on an unconnected socket")
    except OSError as x:
        assert x.errno == errno.ENOTCONN
    # recvfrom on TCP reports no address, like Linux.
    c = conn(host, "echo")
    c.sendall(b"abc")
    d, a = c.recvfrom(3)
    assert d == b"abc" and a is None, (d, a)
    c.close()


def case_v6only(host, me4, me6):
    a6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    assert a6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    a6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    assert a6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    a6.bind(("::", 7100))
    try:
        a6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        raise AssertionError("IPV6_V6ONLY changed after bind")
    except OSError as x:
        assert x.errno == errno.EINVAL, x
    a6.listen(4)
    a4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a4.bind(("0.0.0.0", 7100))
    a4.listen(4)
    c4 = socket.create_connection((me4, 7100))
    c6 = socket.create_connection((me6, 7100))
    a4.settimeout(10)
    a6.settimeout(10)
    s4, p4 = a4.accept()
    s6, p6 = a6.accept()
    assert p4[0] == me4 and p6[0] == me6, (p4, p6)
    for c in (c4, c6, s4, s6):
        c.close()
    # An IPv4 SYN to a port with only a v6-only listener is refused (RST), as on Linux.
    o6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    o6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    o6.bind(("::", 7103))
    o6.listen(4)
    for target in ((me4, 7103), (SERVER4, V6ONLY)):
        r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        r.settimeout(10)
        try:
            r.connect(target)
            raise AssertionError("IPv4 connect to a v6-only listener at %s" % (target,))
        except ConnectionRefusedError:
            pass
        r.close()
    o6.close()
    r = socket.create_connection((host, V6ONLY), timeout=10)
    assert r.recv(1) == b"k"
    r.close()
    # A v6-only socket cannot reach IPv4 peers; a dual-stack wildcard conflicts with IPv4.
    v = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    v.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        v.connect(("::ffff:" + me4, 7100))
        raise AssertionError("v6only socket connected to a v4-mapped address")
    except OSError as x:
        assert x.errno == errno.ENETUNREACH, x
    d = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    d.bind(("::", 7101))
    d.listen(1)
    b4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        b4.bind(("0.0.0.0", 7101))
        raise AssertionError("IPv4 bind under a dual-stack wildcard")
    except OSError as x:
        assert x.errno == errno.EADDRINUSE, x
    # The same on a specific address: v6only wildcard and 10.x on one port, like nginx.
    w = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    w.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    w.bind(("::", 7102))
    w.listen(1)
    x4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    x4.bind((me4, 7102))
    x4.listen(1)


def case_loopback(host, me):
    # A node has a loopback of its own: 127.0.0.1 and ::1 reach this node's sockets.
    for fam, a in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        l = socket.socket(fam, socket.SOCK_STREAM)
        l.bind((a, 0))
        l.listen(1)
        port = l.getsockname()[1]
        c = socket.create_connection((a, port), timeout=10)
        l.settimeout(10)
        s, p = l.accept()
        assert p[0] == a and c.getsockname()[0] == a, (p, c.getsockname())
        assert c.getpeername()[:2] == (a, port), c.getpeername()
        c.sendall(b"lo")
        assert s.recv(2) == b"lo"
        for x in (c, s, l):
            x.close()
    # A dual-stack wildcard listener takes loopback connections too; "localhost" by name.
    l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    l.bind(("::", 7300))
    l.listen(4)
    l.settimeout(10)
    for target in ("127.0.0.1", "::1", "localhost"):
        c = socket.create_connection((target, 7300), timeout=10)
        s, p = l.accept()
        c.sendall(b"w")
        assert s.recv(1) == b"w", target
        c.close()
        s.close()
    # Connecting to the unspecified address means this host, as on Linux.
    c = socket.create_connection(("0.0.0.0", 7300), timeout=10)
    s, p = l.accept()
    assert p[0] == "::ffff:127.0.0.1", p
    c.close()
    s.close()
    l.close()


def case_reuseaddr(host, me):
    l = socket.socket(fam(me), socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    assert l.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    l.bind((me, 7200))
    l.listen(1)
    # A second listener on the same address needs SO_REUSEPORT, whatever SO_REUSEADDR says.
    m = socket.socket(fam(me), socket.SOCK_STREAM)
    m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        m.bind((me, 7200))
        m.listen(1)
        raise AssertionError("two listeners on one address")
    except OSError as x:
        assert x.errno == errno.EADDRINUSE, x
    m.close()
    # Server-side active close leaves TIME_WAIT; SO_REUSEADDR lets a new listener bind.
    c = socket.create_connection((me, 7200))
    s, _ = l.accept()
    s.close()
    assert c.recv(1) == b""
    c.close()
    l.close()
    n = socket.socket(fam(me), socket.SOCK_STREAM)
    n.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    n.bind((me, 7200))
    n.listen(1)
    c = socket.create_connection((me, 7200))
    c.close()
    # Two unconnected sockets with SO_REUSEADDR may share a port (Linux allows it).
    p = socket.socket(fam(me), socket.SOCK_STREAM)
    q = socket.socket(fam(me), socket.SOCK_STREAM)
    for z in (p, q):
        z.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        z.bind((me, 7201))


def case_reuseport(host, me):
    # Two listeners share the port (SO_REUSEPORT): Linux spreads connections over both by a
    # hash of their addresses (all 24 on one: 2 in 2^24).
    def who():
        c = socket.create_connection((host, REUSE), timeout=10)
        t = recv_all(c)
        c.close()
        return t

    seen = {who() for _ in range(24)}
    assert seen == {b"a", b"b"}, seen
    # One of them closes and a new one takes its place: every connect still lands on one
    # that listens, and both take some.
    c = conn(host, "cycle")
    assert recv_all(c) == b"ok"
    c.close()
    seen = {who() for _ in range(24)}
    assert seen == {b"a", b"b"}, seen


def case_sndbuf(host, me):
    # SO_SNDBUF set after the connect: Linux doubles the value asked for, and a writer whose
    # peer does not read stops (EAGAIN) once that buffer and the peer's window are full
    # (about 72 KiB on Linux: the window of a peer that never read is about 64 KiB).
    c = conn(host, "hold")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 8192
    c.setblocking(False)
    total, chunk = 0, b"x" * 65536
    while total < (64 << 20):
        try:
            total += c.send(chunk)
        except BlockingIOError:
            # Full: wait for room (some may come as the peer's side takes what is in flight).
            if not select.select([], [c], [], 1)[1]:
                break
    # A cut-through connection's send buffer is its socket's. Through the stacks the two
    # daemons' TCP buffers hold more (a megabyte each way): only the end is checked there.
    if os.environ.get("IOTH_CUT_THROUGH") != "0":
        assert total < (512 << 10), total
    assert total < (64 << 20), total
    c.close()


def case_nodelay_cork(host, me):
    c = conn(host, "echo")
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    for i in range(50):
        c.sendall(b"n%02d" % i)
        assert recv_n(c, 3) == b"n%02d" % i
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
    for i in range(10):
        c.send(b"c")
    d = c.dup()
    assert d.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
    d.close()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    c.settimeout(10)
    assert recv_n(c, 10) == b"c" * 10
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    n = c.fileno()
    c.close()
    # A new socket that gets the same descriptor number starts uncorked.
    e = socket.socket(fam(host), socket.SOCK_STREAM)
    assert e.fileno() == n, (e.fileno(), n)
    assert e.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    e.close()
    u = socket.socket(fam(host), socket.SOCK_DGRAM)
    for op, want in ((lambda: u.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1), errno.ENOPROTOOPT),
                     (lambda: u.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK),
                      errno.EOPNOTSUPP if fam(host) == socket.AF_INET else errno.ENOPROTOOPT)):
        try:
            op()
            raise AssertionError("TCP_CORK on a UDP socket")
        except OSError as x:
            assert x.errno == want, x
    u.close()


def case_keepalive(host, me):
    c = conn(host, "echo")
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    c.sendall(b"alive")
    assert recv_n(c, 5) == b"alive"
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == fam(host)
    c.close()


def case_timeouts(host, me):
    c = conn(host, "hold")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    assert struct.unpack("ll", c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == (0, 200000)
    t = time.time()
    try:
        c.recv(1)
        raise AssertionError("no receive timeout")
    except BlockingIOError:
        pass
    assert 0.1 < time.time() - t < 5
    # The peer never reads: sends block, then time out after SO_SNDTIMEO.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 300000))
    chunk = b"z" * 65536
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline, "sends never blocked"
        t = time.time()
        try:
            c.send(chunk)
        except BlockingIOError:
            break
    assert 0.2 < time.time() - t < 5
    c.close()
    # A blocking connect bounded by SO_SNDTIMEO gives EINPROGRESS.
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 500000))
    rv, e, dt = c_connect(s, absent(host), 80)
    assert rv == -1 and e == errno.EINPROGRESS, name(e)
    assert 0.3 < dt < 5, dt


def case_shutdown(host, me):
    c = conn(host, "echo")
    c.sendall(b"tail")
    c.shutdown(socket.SHUT_WR)
    assert recv_all(c) == b"tail"
    try:
        c.send(b"x")
        raise AssertionError("send after SHUT_WR")
    except BrokenPipeError:
        pass
    c.close()
    c = conn(host, "echo")
    c.shutdown(socket.SHUT_RD)
    assert c.recv(10) == b""
    c.close()
    c = conn(host, "echo")
    me_at, peer_at = c.getsockname(), c.getpeername()
    c.shutdown(socket.SHUT_RDWR)
    assert c.recv(10) == b""
    # Shut down both ways is not closed: the socket still knows its addresses.
    assert c.getsockname() == me_at and c.getpeername() == peer_at, (c.getsockname(), me_at)
    c.close()
    u = socket.socket(fam(host), socket.SOCK_STREAM)
    try:
        u.shutdown(socket.SHUT_RDWR)
        raise AssertionError("shutdown of an unconnected socket")
    except OSError as x:
        assert x.errno == errno.ENOTCONN, x
    try:
        u.shutdown(7)
        raise AssertionError("shutdown(7)")
    except OSError as x:
        assert x.errno == errno.EINVAL, x


def case_eof_rst(host, me):
    # Peer half-close: data then EOF, and we can still write.
    c = conn(host, "shutwr")
    assert recv_all(c) == b"bye"
    c.sendall(b"still-writable")
    c.close()
    # Peer reset (SO_LINGER 0): reads end (ECONNRESET or EOF), writes fail.
    c = conn(host, "rst")
    try:
        assert c.recv(10) == b""
    except ConnectionResetError:
        pass
    try:
        for _ in range(100):
            c.send(b"x" * 100)
            time.sleep(0.01)
        raise AssertionError("writes after RST kept succeeding")
    except (BrokenPipeError, ConnectionResetError):
        pass
    c.close()


def case_epipe_sigpipe(host, me):
    def child(flags, disposition):
        c = conn(host, "close")
        assert c.recv(10) == b""
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGPIPE, disposition)
            try:
                for _ in range(500):
                    c.send(b"x" * 1000, flags)
                    time.sleep(0.01)
                os._exit(1)
            except BrokenPipeError:
                os._exit(3)
            except BaseException:
                os._exit(4)
        _, st = os.waitpid(pid, 0)
        c.close()
        return st
    st = child(0, signal.SIG_DFL)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGPIPE, st
    st = child(socket.MSG_NOSIGNAL, signal.SIG_DFL)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 3, st
    st = child(0, signal.SIG_IGN)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 3, st


def case_nonblocking_fcntl_ioctl(host, me):
    c = conn(host, "echo")
    fd = c.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        c.recv(1)
        raise AssertionError("O_NONBLOCK recv blocked")
    except BlockingIOError:
        pass
    fcntl.ioctl(fd, termios.FIONBIO, struct.pack("i", 0))
    assert not flags_of(fd)[0]
    fcntl.ioctl(fd, termios.FIONBIO, struct.pack("i", 1))
    assert flags_of(fd)[0]
    try:
        c.recv(1)
        raise AssertionError("FIONBIO recv blocked")
    except BlockingIOError:
        pass
    c.setblocking(True)
    c.sendall(b"abc")
    deadline = time.time() + 10
    while True:
        n = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        if n == 3:
            break
        assert time.time() < deadline, n
        select.select([c], [], [], 1)
    assert c.recv(3) == b"abc"
    c.close()


def exec_in_child(argv, keep=()):
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, st = os.waitpid(pid, 0)
    return os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1


def case_cloexec(host, me):
    c = conn(host, "echo")
    fd = c.fileno()
    assert flags_of(fd)[1], "Python sockets are close-on-exec"
    assert exec_in_child(["sh", "-c", f"test -e /proc/self/fd/{fd}"]) == 1
    os.set_inheritable(fd, True)
    assert not flags_of(fd)[1]
    assert exec_in_child(["sh", "-c", f"printf via-exec >&{fd}"]) == 0
    assert recv_n(c, 8) == b"via-exec"
    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    assert exec_in_child(["sh", "-c", f"test -e /proc/self/fd/{fd}"]) == 1
    s = socket.socket(fam(host), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    assert flags_of(s.fileno())[1]
    c.close()


def case_dup(host, me):
    c = conn(host, "echo")
    a = os.dup(c.fileno())
    b = os.dup2(c.fileno(), 200)
    d = os.dup2(c.fileno(), 201, inheritable=False)  # dup3(O_CLOEXEC)
    assert flags_of(d)[1] and not flags_of(b)[1]
    peer = c.getpeername()
    c.close()
    for fd in (a, b, d):
        s = socket.socket(fileno=os.dup(fd))
        assert s.getpeername() == peer
        s.sendall(b"dup%d" % fd)
        assert recv_n(s, len(b"dup%d" % fd)) == b"dup%d" % fd
        os.close(s.detach())
    for fd in (a, b, d):
        os.close(fd)


def case_fork(host, me):
    c = conn(host, "echo")
    pid = os.fork()
    if pid == 0:
        c.sendall(b"from-child")
        c.close()
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    assert st == 0
    assert recv_n(c, 10) == b"from-child"
    c.sendall(b"after-fork")
    assert recv_n(c, 10) == b"after-fork"
    c.close()


def case_exec_stdio(host, me):
    c = conn(host, "echo")
    c.sendall(b"ping\n")
    pid = os.fork()
    if pid == 0:
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        os.execvp("sh", ["sh", "-c", 'read l; printf "got-$l"'])
    _, st = os.waitpid(pid, 0)
    assert st == 0, st
    assert recv_n(c, 8) == b"got-ping"
    c.sendall(b"again")
    assert recv_n(c, 5) == b"again"
    c.close()


def case_exec_held(host, me):
    # A connected socket handed on by exec before its process asked its daemon anything
    # (the shim may still hold what it would have told it): the new program sees the
    # connection's addresses and uses it.
    c = conn(host, "info")
    fd = c.detach()
    os.set_inheritable(fd, True)
    os.execv(sys.executable, [sys.executable, __file__, "exec_held_child", str(fd), host, me])


def case_spawn_held(host, me):
    # The same, handed on by a child that Python's subprocess starts with vfork (the child
    # shares our memory until its exec), by posix_spawn and system (whose children start
    # inside libc), and last by the variadic execl, with arguments beyond the registers.
    for how in ("subprocess", "posix_spawn", "system"):
        c = conn(host, "info")
        fd = c.detach()
        argv = [sys.executable, __file__, "exec_held_child", str(fd), host, me]
        if how == "subprocess":
            rc = __import__("subprocess").run(argv, pass_fds=[fd]).returncode
        elif how == "system":
            os.set_inheritable(fd, True)
            rc = os.waitstatus_to_exitcode(os.system(__import__("shlex").join(argv)))
        else:
            os.set_inheritable(fd, True)
            pid = os.posix_spawn(argv[0], argv, os.environ)
            rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert rc == 0, (how, rc)
        os.close(fd)
    c = conn(host, "info")
    fd = c.detach()
    os.set_inheritable(fd, True)
    args = [a.encode() for a in (sys.executable, __file__, "spawn_held_last", str(fd), host, me)]
    libc.execl(args[0], *args, None)
    raise OSError(ctypes.get_errno(), "execl")


def case_spawn_held_last(fd, host, me):
    case_exec_held_child(fd, host, me)


def case_exec_held_child(fd, host, me):
    c = socket.socket(fileno=int(fd))
    line = c.makefile("rb").readline().decode().split()
    mine, peer = c.getsockname(), c.getpeername()
    assert peer[:2] == (host, PORT), peer
    assert mine[0] == me, (mine, me)
    v4 = "::ffff:" if fam(host) == socket.AF_INET else ""
    assert line[0] == v4 + me and line[2] == v4 + host, line
    assert int(line[1]) == mine[1] and int(line[3]) == PORT, line
    c.send(b"x")
    c.close()
    c = conn(host, "echo")
    c.sendall(b"after-exec")
    assert recv_n(c, 10) == b"after-exec"
    c.close()


def case_close_range(host, me):
    c = conn(host, "echo")
    keep = c.fileno()
    # Everything above our socket, including the shim's own control connections.
    os.closerange(keep + 1, 65536)
    assert c.getpeername()[1] == PORT
    c.sendall(b"cr1")
    assert recv_n(c, 3) == b"cr1"
    n = conn(host, "echo")
    n.sendall(b"new")
    assert recv_n(n, 3) == b"new"
    nfd = n.fileno()
    # close_range(2) itself, and its CLOSE_RANGE_CLOEXEC form.
    libc.syscall.restype = ctypes.c_long
    assert libc.syscall(436, max(keep, nfd) + 1, 0xffffffff, 0) == 0
    assert libc.syscall(436, nfd, nfd, 4) == 0
    assert flags_of(nfd)[1]
    c.sendall(b"cr2")
    assert recv_n(c, 3) == b"cr2"
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    c.close()
    n.close()


class PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def ppoll(fds, events, timeout):
    arr = (PollFd * len(fds))(*[PollFd(fd, events, 0) for fd in fds])
    ts = struct.pack("ll", int(timeout), int((timeout % 1) * 1e9))
    r = libc.ppoll(arr, len(fds), ctypes.c_char_p(ts), None)
    assert r >= 0, name(ctypes.get_errno())
    return {p.fd: p.revents for p in arr if p.revents}


def case_poll_select(host, me):
    c = conn(host, "echo")
    rp, wp = os.pipe()
    k1, k2 = socket.socketpair()
    # Nothing readable yet; the socket is writable.
    r, w, _ = select.select([c, rp, k1], [c], [], 0)
    assert r == [] and w == [c], (r, w)
    assert ppoll([c.fileno(), rp], select.POLLIN, 0) == {}
    c.sendall(b"e")
    os.write(wp, b"p")
    deadline = time.time() + 10
    while True:
        r, _, _ = select.select([c, rp, k1], [], [], 1)
        if c in r:
            break
        assert time.time() < deadline
    assert set(r) == {c, rp}, r
    po = select.poll()
    for fd in (c.fileno(), rp, k1.fileno()):
        po.register(fd, select.POLLIN)
    got = dict(po.poll(1000))
    assert set(got) == {c.fileno(), rp}, got
    got = ppoll([c.fileno(), rp, k1.fileno()], select.POLLIN, 1)
    assert set(got) == {c.fileno(), rp}, got
    k2.send(b"k")
    got = ppoll([c.fileno(), rp, k1.fileno()], select.POLLIN, 1)
    assert set(got) == {c.fileno(), rp, k1.fileno()}, got
    assert c.recv(1) == b"e" and os.read(rp, 1) == b"p"
    assert ppoll([c.fileno(), rp], select.POLLIN, 0.05) == {}
    c.close()


def case_epoll(host, me):
    c = conn(host, "echo")
    rp, wp = os.pipe()
    ep = select.epoll()
    ep.register(c.fileno(), select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP)
    ep.register(rp, select.EPOLLIN | select.EPOLLET)
    assert ep.poll(0) == []
    c.sendall(b"e")
    ev = dict(ep.poll(10))
    assert ev.get(c.fileno(), 0) & select.EPOLLIN, ev
    assert ep.poll(0.1) == [], "edge-triggered fired twice"
    os.write(wp, b"p")
    ev = dict(ep.poll(10))
    assert rp in ev and c.fileno() not in ev, ev
    assert c.recv(1) == b"e"
    c.close()
    # EPOLLRDHUP when the peer shuts its sending side.
    h = conn(host, "shutwr")
    ep2 = select.epoll()
    ep2.register(h.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    deadline = time.time() + 10
    while True:
        ev = dict(ep2.poll(1))
        if ev.get(h.fileno(), 0) & select.EPOLLRDHUP:
            break
        assert time.time() < deadline, ev
    assert recv_all(h) == b"bye"
    h.close()
    # EPOLLEXCLUSIVE: forked workers share one listener, each connection goes to one of them.
    l = socket.socket(fam(me), socket.SOCK_STREAM)
    l.bind((me, 0))
    l.listen(16)
    l.setblocking(False)
    port = l.getsockname()[1]
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            e = select.epoll()
            e.register(l.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            while True:
                e.poll()
                try:
                    a, _ = l.accept()
                except BlockingIOError:
                    continue
                a.setblocking(True)
                a.sendall(str(os.getpid()).encode())
                a.close()
        kids.append(pid)
    try:
        seen = []
        for _ in range(8):
            s = socket.create_connection((me, port))
            s.settimeout(20)
            got = recv_all(s).decode()
            assert int(got) in kids, (got, kids)
            seen.append(int(got))
            s.close()
    finally:
        for k in kids:
            os.kill(k, signal.SIGKILL)
            os.waitpid(k, 0)


def case_signals(host, me):
    # A successful blocking connect first (a connect to an absent neighbour in progress delays
    # neighbour discovery of others: smoltcp rate-limits it per interface).
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    rv, e, _ = c_connect(s, host, PORT)
    assert rv == 0, name(e)
    s.close()
    hit = []
    signal.signal(signal.SIGALRM, lambda *a: hit.append(1))
    # SA_RESTART: the blocking connect keeps waiting through the signal.
    signal.siginterrupt(signal.SIGALRM, False)
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    rv, e, dt = c_connect(s, absent(host), 80)
    assert rv == -1 and e in (errno.EHOSTUNREACH, errno.ETIMEDOUT), name(e)
    assert dt > 1.0 and hit, (dt, hit)
    s.close()
    # Without SA_RESTART: EINTR.
    signal.siginterrupt(signal.SIGALRM, True)
    hit.clear()
    s = socket.socket(fam(host), socket.SOCK_STREAM)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    rv, e, dt = c_connect(s, absent(host), 80)
    assert rv == -1 and e == errno.EINTR, name(e)
    assert dt < 2.5, dt
    # Linux goes on connecting in the background: a second connect says EALREADY.
    s.setblocking(False)
    e = s.connect_ex((absent(host), 80))
    assert e == errno.EALREADY, name(e)
    # A blocking connect then waits for the outcome of the one under way.
    s.setblocking(True)
    rv, e, dt = c_connect(s, absent(host), 80)
    assert rv == -1 and e in (errno.EHOSTUNREACH, errno.ETIMEDOUT), name(e)
    s.close()


def case_non_inet_untouched(host, me):
    u1, u2 = socket.socketpair()
    u1.send(b"u")
    assert u2.recv(1) == b"u"
    assert u1.getsockname() == ""
    d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    d1.send(b"dgram")
    assert d2.recv(10) == b"dgram"
    nm = "\0ioth-test-%d" % os.getpid()
    l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    l.bind(nm)
    l.listen(1)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(nm)
    a, _ = l.accept()
    a.send(b"ok")
    assert c.recv(2) == b"ok"
    assert l.getsockname() == nm.encode() or l.getsockname() == nm, l.getsockname()
    n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    n.bind((0, 0))
    assert n.getsockname()[0] != 0 or True
    n.close()


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        case = sys.argv[1]
        CASES[case](*sys.argv[2:])
        print("ok", case, flush=True)
