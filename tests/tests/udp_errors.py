#!/usr/bin/env python3
"""What a program sees of ICMP errors on UDP sockets: one line per case, "NAME: OUTCOME", so
that tests/tests/udp.rs can run this script over the kernel's loopback and as an ioth node in
the same test run and compare the lines (the expected behaviour is the kernel's).

usage: udp_errors.py ADDR   (an address of this host, or of the node)

Each case sends to a port of ADDR nobody listens on (which answers with ICMP "port
unreachable"). No sleeps: every wait is for a readiness (poll) with a 10 s bound.
"""
import errno
import select
import socket
import struct
import sys

ADDR = sys.argv[1]
V6 = ":" in ADDR
FAM = socket.AF_INET6 if V6 else socket.AF_INET
LEVEL = socket.IPPROTO_IPV6 if V6 else socket.IPPROTO_IP
RECVERR = 25 if V6 else 11  # IPV6_RECVERR, IP_RECVERR


def name(e):
    return errno.errorcode.get(e, str(e))


def outcome(f):
    """What f() gave: its value, or the errno it raised."""
    try:
        return repr(f())
    except OSError as e:
        return name(e.errno)


def wait(s):
    """Wait (10 s at most) until s is readable or has an error (the kernel reports an ICMP
    error as POLLERR; ioth as a readable record: either wakes a program's poll)."""
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLERR)
    for _ in range(100):
        if p.poll(100):
            return
    raise SystemExit("timed out waiting for the socket")


def closed_port():
    """A port of ADDR with no socket on it (bound once, then closed)."""
    t = socket.socket(FAM, socket.SOCK_DGRAM)
    t.bind((ADDR, 0))
    port = t.getsockname()[1]
    t.close()
    return port


def sock(**kw):
    s = socket.socket(FAM, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind((ADDR, 0))
    return s


def show(case, value):
    print(f"{case}: {value}", flush=True)


# A connected socket: its next receive fails with the error, once.
dst = (ADDR, closed_port())
c = sock()
c.connect(dst)
c.send(b"nobody")
wait(c)
show("connected_recv", outcome(lambda: c.recv(100)))
show("connected_recv_again", outcome(lambda: c.recv(100)))
c.close()

# What poll says of a socket with a pending error: POLLERR, not POLLIN (nothing is queued);
# once a receive took the error, neither.
def revents(s):
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLOUT)
    r = p.poll(0)
    bits = r[0][1] if r else 0
    return "|".join(n for n, b in (("IN", select.POLLIN), ("OUT", select.POLLOUT),
                                   ("ERR", select.POLLERR), ("HUP", select.POLLHUP)) if bits & b)


def epoll_events(s):
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT)
    r = ep.poll(0)
    ep.close()
    bits = r[0][1] if r else 0
    return "|".join(n for n, b in (("IN", select.EPOLLIN), ("OUT", select.EPOLLOUT),
                                   ("ERR", select.EPOLLERR), ("HUP", select.EPOLLHUP)) if bits & b)


c = sock()
c.connect(dst)
c.send(b"nobody")
wait(c)
show("poll_error", revents(c))
show("epoll_error", epoll_events(c))
show("poll_after_recv", outcome(lambda: c.recv(100)) + " " + revents(c) + " " + epoll_events(c))
c.close()

# The next send fails with the error and takes it.
c = sock()
c.connect(dst)
c.send(b"nobody")
wait(c)
show("send_after_error", outcome(lambda: c.send(b"again")))
show("send_after_error_recv", outcome(lambda: c.recv(100)))
c.close()

# SO_ERROR takes the error first; the receive after it has nothing.
c = sock()
c.connect(dst)
c.send(b"nobody")
wait(c)
show("so_error", name(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
show("so_error_then_recv", outcome(lambda: c.recv(100)))
show("so_error_again", name(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
c.close()

# An unconnected socket without IP_RECVERR hears nothing: the next datagram is its own.
u = sock()
u.sendto(b"nobody", dst)
u.sendto(b"self", u.getsockname())
wait(u)
show("unconnected_no_error", outcome(lambda: u.recv(100)))
u.close()

# With IP_RECVERR (IPV6_RECVERR) an unconnected socket gets the error, and
# recvmsg(MSG_ERRQUEUE) the details: the quoted payload, the quoted datagram's destination,
# the extended error and who sent it.
u = sock()
u.setsockopt(LEVEL, RECVERR, 1)
show("recverr_get", u.getsockopt(LEVEL, RECVERR))
u.sendto(b"quoted payload", dst)
wait(u)
data, anc, flags, frm = u.recvmsg(100, 1024, socket.MSG_ERRQUEUE)
show("errqueue_data", data)
show("errqueue_flags", (bool(flags & socket.MSG_ERRQUEUE), bool(flags & socket.MSG_TRUNC)))
show("errqueue_from", (frm[0] == ADDR, frm[1] == dst[1]))
show("errqueue_cmsgs", [(lv == LEVEL, ty == RECVERR) for lv, ty, _ in anc])
for lv, ty, d in anc:
    ee_errno, origin, etype, code, _pad, info, _data = struct.unpack("=IBBBBII", d[:16])
    off_family = struct.unpack("=H", d[16:18])[0]
    if V6:
        off_addr = socket.inet_ntop(socket.AF_INET6, d[24:40])
    else:
        off_addr = socket.inet_ntop(socket.AF_INET, d[20:24])
    show("errqueue_ee", (name(ee_errno), origin, etype, code, info))
    show("errqueue_offender", (off_family == FAM, off_addr == ADDR, len(d)))
show("errqueue_then_recv", outcome(lambda: u.recv(100)))
show("errqueue_empty", outcome(lambda: u.recvmsg(100, 1024, socket.MSG_ERRQUEUE)))

# A payload larger than the buffer: MSG_TRUNC, and the start of it.
u.sendto(b"0123456789abcdef", dst)
wait(u)
data, anc, flags, frm = u.recvmsg(4, 1024, socket.MSG_ERRQUEUE)
show("errqueue_trunc", (data, bool(flags & socket.MSG_TRUNC)))
# And without room for the control message: MSG_CTRUNC.
u.sendto(b"x", dst)
wait(u)
data, anc, flags, frm = u.recvmsg(4, 0, socket.MSG_ERRQUEUE)
show("errqueue_ctrunc", (data, bool(flags & socket.MSG_CTRUNC), anc))
u.close()
print("done", flush=True)
