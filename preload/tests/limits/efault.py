# Bad pointers to socket calls on virtual sockets give EFAULT, as from the kernel, and the
# sockets keep working. Run as a node; argv[1]: the address of a UDP echo-free peer check.
import ctypes, errno, socket, sys

libc = ctypes.CDLL(None, use_errno=True)
BAD = ctypes.c_void_p(1)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.bind(("::", 0))
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v.connect(("::1", u.getsockname()[1]))
buf = ctypes.create_string_buffer(b"x" * 16)
ln = ctypes.c_uint32(28)
checks = {
    "sendto dest": lambda: libc.sendto(u.fileno(), buf, 4, 0, BAD, 28),
    "connect": lambda: libc.connect(t.fileno(), BAD, 28),
    "bind": lambda: libc.bind(t.fileno(), BAD, 28),
    "getsockname addr": lambda: libc.getsockname(u.fileno(), BAD, ctypes.byref(ln)),
    "getsockname len": lambda: libc.getsockname(u.fileno(), buf, BAD),
    "getpeername len": lambda: libc.getpeername(v.fileno(), buf, BAD),
    "setsockopt value": lambda: libc.setsockopt(
        u.fileno(), socket.SOL_SOCKET, socket.SO_BROADCAST, BAD, 4),
    "getsockopt value": lambda: libc.getsockopt(
        u.fileno(), socket.SOL_SOCKET, socket.SO_BROADCAST, BAD, ctypes.byref(ln)),
    "getsockopt len": lambda: libc.getsockopt(
        u.fileno(), socket.SOL_SOCKET, socket.SO_BROADCAST, buf, BAD),
}
for name, call in checks.items():
    ln.value = 28
    ctypes.set_errno(0)
    r = call()
    e = ctypes.get_errno()
    print(name, r, errno.errorcode.get(e, e), flush=True)
    assert r == -1 and e == errno.EFAULT, (name, r, e)

# recvfrom with a bad address buffer: EFAULT (the datagram is consumed, as in the kernel).
u.sendto(b"ping", ("::1", u.getsockname()[1]))
ctypes.set_errno(0)
r = libc.recvfrom(u.fileno(), buf, 16, 0, BAD, ctypes.byref(ln))
e = ctypes.get_errno()
print("recvfrom addr", r, errno.errorcode.get(e, e), flush=True)
assert r == -1 and e == errno.EFAULT, (r, e)

# Still working.
u.sendto(b"pong", ("::1", u.getsockname()[1]))
assert u.recvfrom(16)[0] == b"pong"
print("ok", flush=True)
