#!/usr/bin/env python3
"""Captures real HTTP/2 connections for the parser's tests.

Starts `server.js` (node's HTTP/2 server, cleartext with prior knowledge), puts a recording
proxy in front of it, runs a real client through the proxy, and writes every chunk the proxy
relayed, in order, as `> hex` (client to server) or `< hex` (server to client) lines: the bytes
a client process writes and reads, as the agent sees them at SSL_write / SSL_read. curl talks
TLS with ALPN h2 to the proxy (which decrypts; its HTTP/2 connection reuse over cleartext is
broken in some releases), the node client cleartext HTTP/2.

    python3 capture.py   # rewrites curl.txt and node.txt beside this file

Needs node, openssl and curl built with nghttp2.
"""

import os
import socket
import ssl
import tempfile
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))


def relay(src, dst, tag, log, lock):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        with lock:
            log.append((tag, data))
        dst.sendall(data)


def capture(server_port, run_client, tls=None):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    log, lock = [], threading.Lock()

    def accept():
        client, _ = listener.accept()
        if tls is not None:
            client = tls.wrap_socket(client, server_side=True)
        upstream = socket.create_connection(("127.0.0.1", server_port))
        threads = [
            threading.Thread(target=relay, args=(client, upstream, ">", log, lock)),
            threading.Thread(target=relay, args=(upstream, client, "<", log, lock)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        upstream.close()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    run_client(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
    acceptor.join(timeout=10)
    listener.close()
    return log


def curl(base):
    """Sequential calls on one connection: curl reuses it for every URL and `--next` part."""
    common = ["--http2", "-k", "-sS",
              "-H", "authorization: Bearer sk-test-0123456789", "-H", "x-api-key: key-abcdef"]
    args = ["curl"] + common
    for path in ["/v1/models", "/v1/models?limit=2", "/v1/gzip", "/v1/limited", "/v1/limited",
                 "/v1/models"]:
        args += ["-o", "/dev/null", base + path]
    body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
    args += ["--next"] + common + ["-o", "/dev/null", "-H", "content-type: application/json",
                                   "--data", body, base + "/v1/chat/completions"]
    subprocess.run(args, check=True)


def node_client(base):
    subprocess.run(["node", os.path.join(HERE, "client.js"), base], check=True)


def write(name, log):
    with open(os.path.join(HERE, name), "w") as f:
        for tag, data in log:
            f.write(f"{tag} {data.hex()}\n")
    print(f"{name}: {len(log)} chunks, {sum(len(d) for _, d in log)} bytes")


def tls_context(tmp):
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def main():
    server = subprocess.Popen(["node", os.path.join(HERE, "server.js")], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            write("curl.txt", capture(port, curl, tls_context(tmp)))
        write("node.txt", capture(port, node_client))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
