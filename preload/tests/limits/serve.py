import socket, sys, threading
data = open(sys.argv[2], 'rb').read()
ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(('::', int(sys.argv[1])))
ls.listen(128)
def serve(c):
    try:
        c.sendall(data)
    finally:
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
