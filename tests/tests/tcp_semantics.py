#!/usr/bin/env python3
"""What a program sees of TCP resets, TIME_WAIT and a few options: one line per case,
"NAME: OUTCOME", so that tests/tests/tcp_semantics.rs can run this script over the kernel's
loopback and as an ioth node in the same test run and compare the lines (the expected
behaviour is the kernel's, not a list written by hand).

usage: tcp_semantics.py ADDR   (an address of this host, or of the node)

No sleeps: every wait is for a readiness (poll) with a 10 s bound.
"""
import errno
import os
import select
import signal
import socket
import struct
import sys

ADDR = sys.argv[1]
FAM = socket.AF_INET6 if ":" in ADDR else socket.AF_INET


def name(e):
    return errno.errorcode.get(e, str(e))


def outcome(f):
    """What f() gave: its value, or the errno it raised."""
    try:
        return repr(f())
    except OSError as e:
        return name(e.errno)


def wait(s, events):
    """Wait (10 s at most) until poll on s shows one of `events`; the events seen."""
    p = select.poll()
    p.register(s, events)
    for _ in range(100):
        got = p.poll(100)
        if got and got[0][1] & events:
            return got[0][1]
    raise SystemExit(f"timed out waiting for poll events {events:#x}")


def pair(reuse=True):
    """A connected pair (client, server) and the listener's port; the listener is closed."""
    ln = socket.socket(FAM)
    if reuse:
        ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ln.bind((ADDR, 0))
    ln.listen(1)
    port = ln.getsockname()[1]
    c = socket.socket(FAM)
    c.connect((ADDR, port))
    s, _ = ln.accept()
    ln.close()
    return c, s, port


def reset(s):
    """Close with SO_LINGER 0: an RST instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def out(case, what):
    print(f"{case}: {what}", flush=True)


# A reset after data was read: read gives ECONNRESET once, then EOF; SO_ERROR is then 0.
c, s, _ = pair()
s.sendall(b"hi")
wait(c, select.POLLIN)
c.recv(2)
reset(s)
wait(c, select.POLLHUP)
out("rst_read", outcome(lambda: c.recv(100)))
out("rst_read_again", outcome(lambda: c.recv(100)))
out("rst_so_error_after_read", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
c.close()

# Data still unread when the reset comes: the data first, then the error.
c, s, _ = pair()
s.sendall(b"tail")
wait(c, select.POLLIN)
reset(s)
wait(c, select.POLLHUP)
out("rst_unread_data", outcome(lambda: c.recv(100)))
out("rst_unread_then", outcome(lambda: c.recv(100)))
c.close()

# SO_ERROR read first takes the error: read then gives EOF.
c, s, _ = pair()
reset(s)
wait(c, select.POLLHUP)
out("rst_so_error", name(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
out("rst_read_after_so_error", outcome(lambda: c.recv(100)))
c.close()

# recv_into and recvmsg see the reset too (readv/recvmsg paths).
c, s, _ = pair()
reset(s)
wait(c, select.POLLHUP)
out("rst_recvmsg", outcome(lambda: c.recvmsg(100)[0]))
c.close()

# Writing after a reset: the first write fails with ECONNRESET and no SIGPIPE, the next
# with EPIPE and SIGPIPE (send, write and sendmsg paths); after a read took the error, EPIPE.
pipes = []
signal.signal(signal.SIGPIPE, lambda *_: pipes.append(1))
for how, w in [
    ("send", lambda c: c.send(b"x")),
    ("write", lambda c: os.write(c.fileno(), b"x")),
    ("sendmsg", lambda c: c.sendmsg([b"x", b"y"])),
]:
    c, s, _ = pair()
    reset(s)
    wait(c, select.POLLHUP)
    del pipes[:]
    out(f"rst_{how}", outcome(lambda: w(c)))
    out(f"rst_{how}_sigpipe", len(pipes))
    out(f"rst_{how}_again", outcome(lambda: w(c)))
    out(f"rst_{how}_again_sigpipe", len(pipes))
    c.close()
c, s, _ = pair()
reset(s)
wait(c, select.POLLHUP)
outcome(lambda: c.recv(10))
del pipes[:]
out("rst_read_then_send", outcome(lambda: c.send(b"x")))
out("rst_read_then_send_sigpipe", len(pipes))
c.close()
# The peer's FIN, then its reset: the write error is EPIPE, with SIGPIPE.
c, s, _ = pair()
s.shutdown(socket.SHUT_WR)
wait(c, select.POLLIN)
outcome(lambda: c.recv(10))
reset(s)
wait(c, select.POLLHUP)
del pipes[:]
out("fin_rst_send", outcome(lambda: c.send(b"x")))
out("fin_rst_send_sigpipe", len(pipes))
c.close()
c, s, _ = pair()
reset(s)
wait(c, select.POLLHUP)
out("rst_send_nosignal", outcome(lambda: c.send(b"x", socket.MSG_NOSIGNAL)))
del pipes[:]
out("rst_send_nosignal_again", outcome(lambda: c.send(b"x", socket.MSG_NOSIGNAL)))
out("rst_send_nosignal_sigpipe", len(pipes))
c.close()
signal.signal(signal.SIGPIPE, signal.SIG_IGN)

# sendfile and splice after a reset, SIGPIPE ignored (as servers have it): ECONNRESET, then
# EPIPE, as for write.
src = os.open(".", os.O_RDWR | os.O_TMPFILE)
os.write(src, b"x" * 100)
rp, wp = os.pipe()
for how, w in [
    ("sendfile", lambda c: os.sendfile(c.fileno(), src, 0, 10)),
    ("splice", lambda c: (os.write(wp, b"y" * 10), os.splice(rp, c.fileno(), 10))[1]),
]:
    c, s, _ = pair()
    reset(s)
    wait(c, select.POLLHUP)
    out(f"rst_{how}", outcome(lambda: w(c)))
    out(f"rst_{how}_again", outcome(lambda: w(c)))
    c.close()
os.close(src)
os.close(rp)
os.close(wp)

# A FIN first, then the reset: EOF, not an error.
c, s, _ = pair()
s.shutdown(socket.SHUT_WR)
wait(c, select.POLLIN)
out("fin_read", outcome(lambda: c.recv(100)))
reset(s)
wait(c, select.POLLHUP)
out("fin_then_rst_read", outcome(lambda: c.recv(100)))
c.close()

# An ordinary close: EOF, and EOF again.
c, s, _ = pair()
s.close()
wait(c, select.POLLIN)
out("fin_only", outcome(lambda: c.recv(100)))
out("fin_only_again", outcome(lambda: c.recv(100)))
c.close()

# The server closes first: its side of the connection stays in TIME_WAIT (FIN_WAIT_2 until
# the client's FIN), so its port is busy for a new bind without SO_REUSEADDR, free with it.
c, s, port = pair(reuse=True)
s.close()
wait(c, select.POLLIN)
c.recv(10)
c.close()
b1 = socket.socket(FAM)
out("time_wait_bind", outcome(lambda: b1.bind((ADDR, port))))
b1.close()
b2 = socket.socket(FAM)
b2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
out("time_wait_bind_reuseaddr", outcome(lambda: b2.bind((ADDR, port))))
out("time_wait_listen_reuseaddr", outcome(lambda: b2.listen(1)))
b2.close()

# The passive side's port (the client's, which closed second) is free at once.
c, s, port = pair(reuse=True)
cport = c.getsockname()[1]
s.close()
wait(c, select.POLLIN)
c.recv(10)
c.close()
b3 = socket.socket(FAM)
out("passive_close_port_free", outcome(lambda: b3.bind((ADDR, cport))))
b3.close()

# SO_BINDTODEVICE on a socket bound to no device: an empty name.
t = socket.socket(FAM)
out("bindtodevice", outcome(lambda: t.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)))
t.close()
print("done", flush=True)
