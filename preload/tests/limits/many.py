# Hold N connections to an HTTP server at once (all connected before any request is sent),
# then fetch PATH on each with HTTP/1.0 and check every body's sha256.
import errno, hashlib, resource, selectors, socket, sys, time

host, port, n, path, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 100:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
deadline = time.time() + 120
sel = selectors.DefaultSelector()
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex((host, port, 0, 0))
    assert e in (0, errno.EINPROGRESS), (i, errno.errorcode.get(e, e))
    socks.append(s)
    sel.register(s, selectors.EVENT_WRITE, i)
pending = n
while pending:
    assert time.time() < deadline, f"{pending} connects still pending"
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        assert err == 0, (key.data, errno.errorcode.get(err, err))
        sel.unregister(s)
        pending -= 1
print("connected", n, flush=True)
req = f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()
bufs = {}
for i, s in enumerate(socks):
    s.sendall(req)
    bufs[i] = bytearray()
    sel.register(s, selectors.EVENT_READ, i)
left = n
bad = []
while left:
    assert time.time() < deadline, f"{left} responses still pending"
    for key, _ in sel.select(timeout=1):
        s, i = key.fileobj, key.data
        try:
            b = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            bad.append((i, errno.errorcode.get(e.errno, e.errno)))
            b = b""
        if b:
            bufs[i] += b
            continue
        sel.unregister(s)
        s.close()
        left -= 1
        head, _, body = bytes(bufs[i]).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or hashlib.sha256(body).hexdigest() != want:
            bad.append((i, head[:40], len(body)))
assert not bad, (len(bad), bad[:5])
print("ok", n, flush=True)
