import socket, sys, errno, hashlib, resource
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
    print("round", rnd, "opened", len(socks), "then", err and errno.errorcode[err], flush=True)
    assert err == errno.EMFILE, err
    for s in socks:
        s.close()
    for i in range(3):
        got = fetch()
        assert got == want, (rnd, i, got)
print("ok", flush=True)
