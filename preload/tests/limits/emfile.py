import socket, sys, errno, hashlib, resource, time
T0 = time.time()
def t(): return "%.2f" % (time.time() - T0)
host, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("limit", resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)
def fetch():
    c = socket.create_connection((host, port), timeout=20)
    h = hashlib.sha256()
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
    c.close()
    return h.hexdigest()
assert fetch() == want, "before"
for rnd in range(3):
    socks = []
    err = None
    try:
        while len(socks) < 10000:
            socks.append(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    except OSError as e:
        err = e.errno
    print(t(), "round", rnd, "opened", len(socks), "then", err and errno.errorcode[err], flush=True)
    assert err == errno.EMFILE, err
    for s in socks:
        s.close()
    for i in range(3):
        got = fetch()
        assert got == want, (rnd, i, got)

# accept with a full table: EMFILE, and the connection stays queued (as with the kernel).
ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
ls.bind(("::1", 0))
ls.listen(8)
c = socket.create_connection(ls.getsockname()[:2], timeout=20)
fill = []
try:
    while len(fill) < 10000:
        fill.append(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
except OSError as e:
    assert e.errno == errno.EMFILE, e
# A virtual socket takes two descriptors for a moment (a socketpair): fill the last one.
try:
    while True:
        fill.append(open("/dev/null"))
except OSError as e:
    assert e.errno == errno.EMFILE, e
ls.settimeout(20)
try:
    ls.accept()
    raise AssertionError("accept with a full table succeeded")
except OSError as e:
    assert e.errno == errno.EMFILE, e
for s in fill:
    s.close()
try:
    a, _ = ls.accept()
except OSError as e:
    # The stack daemon shares our limit and may have been short too when the connection
    # came: it said so once (EMFILE) and kept the connection.
    assert e.errno == errno.EMFILE, e
    print(t(), "the daemon was short too", flush=True)
    a, _ = ls.accept()
c.sendall(b"still queued")
c.close()
got = b""
while len(got) < 12:
    b = a.recv(100)
    assert b, got
    got += b
assert got == b"still queued", got
print(t(), "accept ok", flush=True)
print("ok", flush=True)
