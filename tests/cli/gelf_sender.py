"""A component that logs over GELF the way Keboola's libraries do (to KBC_LOGGER_ADDR and
KBC_LOGGER_PORT), for tests/cli/gelf.rs. `parameters.mode` chooses what it sends:

udp    plain, zlib, gzip and chunked (out of order) datagrams, every level, a secret, and
       malformed datagrams (not JSON, a short chunk header, a bad chunk count, a sequence
       that never completes, a message without its required fields)
tcp    null-delimited messages, an `_extra` field, the last one without its null byte
       (with `probe_port`: then tries that port on 127.0.0.1 and says whether it connected)
http   POST /gelf requests on one keep-alive connection (each must be answered 202)
flood  `count` messages of about 600 bytes over one TCP connection

With `fail`, it exits 2 without printing anything.
"""
import gzip
import http.client
import json
import os
import socket
import sys
import time
import zlib

with open("/data/config.json") as f:
    params = json.load(f)["parameters"]
mode = params["mode"]
secret = params.get("#token", "")
addr = os.environ["KBC_LOGGER_ADDR"]
port = int(os.environ["KBC_LOGGER_PORT"])


def message(text, level, **extra):
    m = {"version": "1.1", "host": socket.gethostname(), "short_message": text,
         "level": level, "timestamp": time.time()}
    m.update(extra)
    return json.dumps(m).encode()


def chunks(payload, size, msg_id):
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    return [b"\x1e\x0f" + msg_id + bytes([i, len(parts)]) + p for i, p in enumerate(parts)]


if mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = (addr, port)
    s.sendto(message("plain udp", 6), dest)
    s.sendto(zlib.compress(message("zlib udp", 4)), dest)
    s.sendto(gzip.compress(message("gzip udp", 3)), dest)
    big = message("chunked udp", 5, full_message=os.urandom(6000).hex())
    parts = chunks(zlib.compress(big), 1400, b"\x01" * 8)
    assert len(parts) > 3, len(parts)
    for p in reversed(parts):
        s.sendto(p, dest)
    s.sendto(message("debug hidden by default", 7), dest)
    s.sendto(message("token is " + secret, 6), dest)
    s.sendto(message("critical detail", 2), dest)
    # Malformed: not JSON, a short chunk header, a chunk count of 0, a message without its
    # required fields, and a sequence that never completes (dropped at the end).
    s.sendto(b"not json at all", dest)
    s.sendto(b"\x1e\x0f\x02", dest)
    s.sendto(b"\x1e\x0f" + b"\x03" * 8 + b"\x00\x00" + b"{}", dest)
    s.sendto(json.dumps({"short_message": "no host"}).encode(), dest)
    s.sendto(chunks(message("never complete", 6) * 3, 200, b"\x04" * 8)[0], dest)
elif mode == "tcp":
    s = socket.create_connection((addr, port))
    s.sendall(message("tcp one", 6) + b"\0")
    s.sendall(message("tcp debug", 7, _extra=json.dumps({"rows": 3})) + b"\0\0")
    s.sendall(message("tcp last without null", 4, _step="end"))
    s.close()
elif mode == "http":
    c = http.client.HTTPConnection(addr, port)
    for text in ("http one", "http two"):
        c.request("POST", "/gelf", body=message(text, 6),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 202:
            sys.exit("HTTP answer %d" % r.status)
    c.close()
elif mode == "flood":
    s = socket.create_connection((addr, port))
    pad = "x" * 500
    for i in range(int(params["count"])):
        s.sendall(message("flood %d %s" % (i, pad), 6) + b"\0")
    s.close()
if "probe_port" in params:
    # Only the log server is on this loopback: the host's services are out of reach.
    try:
        socket.create_connection(("127.0.0.1", int(params["probe_port"])), timeout=2).close()
        print("probe connected")
    except OSError as e:
        print("probe refused: %s" % e.__class__.__name__)
if params.get("fail"):
    # Silent failure: the runner's message falls back to the last warning-or-worse message.
    sys.exit(2)
print("sent " + mode)
