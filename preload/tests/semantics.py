#!/usr/bin/env python3
"""Socket semantics of virtual TCP sockets, checked against what Linux does.

`semantics.py server` runs as one node (fd00::10) and serves commands by the first line a
client sends; `semantics.py client SERVER_IP PORT` runs as another node and prints
`ok <check>` per check, raising on the first failure.
"""
import errno, fcntl, os, select, socket, struct, sys, threading, time

PORT = 7000


def serve_conn(c):
    cmd = b""
    while not cmd.endswith(b"\n"):
        b = c.recv(1)
        if not b:
            break
        cmd += b
    cmd = cmd.strip().decode()
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
        peer = c.getpeername()
        me = c.getsockname()
        c.sendall(f"{peer[0]} {peer[1]} {me[0]} {me[1]} {int(bool(fl & os.O_NONBLOCK))} {int(bool(fd & fcntl.FD_CLOEXEC))}\n".encode())
        c.recv(1)
        c.close()
    else:
        c.close()


def server():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", PORT))
    s.listen(64)
    s.setblocking(False)
    try:
        s.accept()
        raise SystemExit("accept on an empty non-blocking listener did not fail")
    except BlockingIOError:
        print("ok accept-eagain", flush=True)
    s.setblocking(True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


def ok(name):
    print("ok", name, flush=True)


def conn(host, port, cmd):
    c = socket.create_connection((host, port), timeout=None)
    c.sendall(cmd.encode() + b"\n")
    return c


def recv_all(c):
    out = b""
    while True:
        d = c.recv(65536)
        if not d:
            return out
        out += d


def client(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Non-blocking connect: EINPROGRESS, not writable at once, EALREADY, then writable,
    # SO_ERROR 0, EISCONN.
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex((host, port))
    assert e == errno.EINPROGRESS, errno.errorcode.get(e, e)
    _, w, _ = select.select([], [s], [], 0)
    e2 = s.connect_ex((host, port))
    assert e2 in (errno.EALREADY, errno.EISCONN), errno.errorcode.get(e2, e2)
    _, w, _ = select.select([], [s], [], 10)
    assert w, "connect did not complete"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    e3 = s.connect_ex((host, port))
    assert e3 == errno.EISCONN, errno.errorcode.get(e3, e3)
    s.close()
    ok("nonblocking-connect")

    # Refused, blocking and non-blocking.
    r = socket.socket(fam, socket.SOCK_STREAM)
    try:
        r.connect((host, port + 1))
        raise AssertionError("connect to a closed port succeeded")
    except ConnectionRefusedError:
        pass
    r.close()
    r = socket.socket(fam, socket.SOCK_STREAM)
    r.setblocking(False)
    assert r.connect_ex((host, port + 1)) == errno.EINPROGRESS
    select.select([], [r], [], 10)
    assert r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    r.close()
    ok("econnrefused")

    # Names, and the server's view (accept4 with SOCK_CLOEXEC: blocking, close-on-exec).
    c = conn(host, port, "info")
    line = c.makefile("rb").readline().decode().split()
    me, peer = c.getsockname(), c.getpeername()
    assert peer[0] == host and peer[1] == port, (peer, host, port)
    norm = lambda a: a[7:] if a.startswith("::ffff:") else a
    assert norm(line[0]) == me[0] and int(line[1]) == me[1], (line, me)
    assert norm(line[2]) == host and int(line[3]) == port, line
    assert line[4] == "0" and line[5] == "1", line
    c.send(b"x")
    c.close()
    ok("names-and-accept-flags")

    # recvfrom reports no address on TCP (addrlen 0), like Linux.
    c = conn(host, port, "echo")
    c.sendall(b"abc")
    d, a = c.recvfrom(3)
    assert d == b"abc" and a is None, (d, a)
    ok("recvfrom-no-address")

    # SHUT_WR: the server sees EOF, echoes what it had, closes; we read EOF.
    c.sendall(b"tail")
    c.shutdown(socket.SHUT_WR)
    assert recv_all(c) == b"tail"
    c.close()
    # SHUT_RD: reads give EOF at once.
    c = conn(host, port, "echo")
    c.shutdown(socket.SHUT_RD)
    assert c.recv(10) == b""
    c.close()
    ok("shutdown")

    # Peer half-close: data then EOF, and we can still write.
    c = conn(host, port, "shutwr")
    assert recv_all(c) == b"bye"
    c.sendall(b"still-writable")
    c.close()
    ok("eof-propagation")

    # EPIPE after the peer closed.
    c = conn(host, port, "close")
    assert c.recv(10) == b""
    try:
        for _ in range(200):
            c.send(b"x" * 1000)
            time.sleep(0.01)
        raise AssertionError("no EPIPE")
    except (BrokenPipeError, ConnectionResetError):
        pass
    c.close()
    ok("epipe")

    # fork: the child's close does not hurt the parent's connection.
    c = conn(host, port, "echo")
    pid = os.fork()
    if pid == 0:
        c.close()
        os._exit(0)
    os.waitpid(pid, 0)
    c.sendall(b"after-fork")
    assert c.recv(100) == b"after-fork"
    ok("fork")

    # exec with the socket on fd 0/1: the child writes through it, then exits.
    pid = os.fork()
    if pid == 0:
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        os.execvp("sh", ["sh", "-c", "printf exec-ok"])
    os.waitpid(pid, 0)
    got = b""
    while len(got) < 7:
        got += c.recv(100)
    assert got == b"exec-ok", got
    c.sendall(b"ping")
    assert c.recv(100) == b"ping"
    ok("exec-stdio")

    # dup2 over another fd, close the original: the copy still works.
    d = os.dup(c.fileno())
    os.dup2(c.fileno(), 200)
    c2 = socket.socket(fileno=d)
    c.close()
    c2.sendall(b"dup")
    assert c2.recv(100) == b"dup"
    assert socket.socket(fileno=os.dup(200)).getpeername()[1] == port
    ok("dup")

    # close_range over everything above our fds, including the shim's control connection.
    os.closerange(201, 1024)
    assert c2.getpeername()[1] == port
    n = socket.create_connection((host, port))
    n.close()
    ok("close-range")

    # epoll edge-triggered on a mixed set (pipe + virtual socket), poll, select.
    rp, wp = os.pipe()
    ep = select.epoll()
    ep.register(c2.fileno(), select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP)
    ep.register(rp, select.EPOLLIN | select.EPOLLET)
    assert ep.poll(0) == []
    c2.sendall(b"e")
    ev = dict(ep.poll(5))
    assert ev.get(c2.fileno(), 0) & select.EPOLLIN, ev
    assert ep.poll(0.1) == [], "edge-triggered fired twice"
    os.write(wp, b"p")
    ev = dict(ep.poll(5))
    assert rp in ev and c2.fileno() not in ev, ev
    assert c2.recv(1) == b"e"
    po = select.poll()
    po.register(c2.fileno(), select.POLLIN)
    po.register(rp, select.POLLIN)
    assert dict(po.poll(5)).get(rp) and c2.fileno() not in dict(po.poll(0))
    r, w, _ = select.select([c2, rp], [c2], [], 5)
    assert c2 in w and rp in r and c2 not in r
    ok("epoll-poll-select")

    # SO_RCVTIMEO bounds a blocking read.
    c2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    t = time.time()
    try:
        c2.recv(1)
        raise AssertionError("no timeout")
    except BlockingIOError:
        pass
    assert 0.1 < time.time() - t < 3
    ok("so-rcvtimeo")

    # FIONBIO and TCP_NODELAY, SO_TYPE, SO_DOMAIN on a virtual socket.
    assert c2.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    c2.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c2.setblocking(False)
    try:
        c2.recv(1)
        raise AssertionError("non-blocking recv blocked")
    except BlockingIOError:
        pass
    ok("options")
    c2.close()

    # AF_UNIX untouched.
    u1, u2 = socket.socketpair()
    u1.send(b"u")
    assert u2.recv(1) == b"u"
    assert u1.getsockname() == ""
    ok("af-unix-untouched")
    print("all-ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2], int(sys.argv[3]))
