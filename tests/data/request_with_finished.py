"""HTTPS calls whose first request rides in the same TCP segment as the client's Finished.

Usage: request_with_finished.py HOST PORT CA_FILE CONNECTIONS

Each connection is opened with TLS 1.3, and its first request is written to the socket together
with the handshake's last message, so the server decrypts it while still handshaking; a second
request follows on the same connection. Prints each response's status line.
"""
import socket
import ssl
import sys

host, port, ca, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3


def pump(sock, outgoing):
    data = outgoing.read()
    if data:
        sock.sendall(data)


def response(sock, obj, incoming):
    buf = b""
    while True:
        try:
            buf += obj.read(65536)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("connection closed early")
            incoming.write(data)
            continue
        head, sep, body = buf.partition(b"\r\n\r\n")
        if not sep:
            continue
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if len(body) >= length:
            return head.split(b"\r\n")[0].decode()


for i in range(n):
    sock = socket.create_connection((host, port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump(sock, outgoing)
            incoming.write(sock.recv(65536))
    # The client's Finished is still in `outgoing`: the request joins it in one segment.
    obj.write(f"GET /v1/customers/cus_move{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    pump(sock, outgoing)
    print(response(sock, obj, incoming), flush=True)
    obj.write(f"GET /v1/customers/cus_next{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    pump(sock, outgoing)
    print(response(sock, obj, incoming), flush=True)
    sock.close()
