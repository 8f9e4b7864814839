#!/usr/bin/env python3
"""Writes the named seeds of the fuzz targets (seeds/<target>/) from the repository's real
captures: the HTTP/2 connections of http/tests/data/h2, HTTP/1 exchanges, and the HAR files of
tests/data. `cargo xtask fuzz` copies the seeds into a working corpus before each run. The
other files of seeds/ (named by their hash) are a corpus grown from these by fuzzing and
minimised with `cargo fuzz cmin`.

    python3 http/fuzz/make_seeds.py
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def script(writes):
    """The fuzz script of `(is_egress, bytes)` writes: `[op, len, bytes...]` records."""
    out = bytearray()
    for egress, data in writes:
        for i in range(0, len(data), 255):
            piece = data[i:i + 255]
            out += bytes([0 if egress else 3, len(piece)]) + piece
    return bytes(out + bytes([7, 0]))


def capture(name):
    with open(os.path.join(ROOT, "http/tests/data/h2", name)) as f:
        return [(l[0] == ">", bytes.fromhex(l[2:].strip())) for l in f if l.strip()]


def frames(data):
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        yield data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big"), data[pos + 9:pos + 9 + n]
        pos += 9 + n


def joined(writes):
    """The h2_joined records of the HEADERS and DATA frames of a capture (preface removed)."""
    out = bytearray()
    for egress, data in writes:
        if data.startswith(PREFACE):
            data = data[len(PREFACE):]
        for kind, flags, stream, payload in frames(data):
            if kind not in (0, 1) or len(payload) > 255:
                continue
            slot = ((stream - 1) // 2) % 8
            op = (0 if egress else 1) | (slot << 1)
            op |= (0 << 4 if kind == 1 else 10 << 4)
            if kind == 1 and flags & 1:
                op |= 0x40
            if kind == 0 and flags & 1:
                op |= 0x4
            out += bytes([op, len(payload)]) + payload
    return bytes(out)


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name in ("curl.txt", "node.txt"):
        writes = capture(name)
        # The http2 target feeds the preface itself.
        first_egress, first = writes[0] if writes[0][0] else (None, None)
        stripped = [(e, d[len(PREFACE):] if d.startswith(PREFACE) else d) for e, d in writes]
        write("http2", name.replace(".txt", ""), script(stripped))
        write("h2_joined", name.replace(".txt", ""), joined(writes))
    write("http1", "post-json", script([
        (True, b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"model\":\"gpt\"}\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
    ]))
    write("http1", "chunked-sse", script([
        (True, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"e\r\ndata: {\"a\":1}\n\n\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: t\r\n\r\n"),
        (True, b"HEAD / HTTP/1.0\r\n\r\n"),
        (False, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
    ]))
    for har in ("stripe.har", "openai-stream.har"):
        with open(os.path.join(ROOT, "tests/data", har), "rb") as f:
            write("har", har.replace(".har", ""), f.read())


if __name__ == "__main__":
    main()
