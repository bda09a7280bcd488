#!/usr/bin/env python3
"""A responder for github.com/tinkerbell/backend written from the README's
wire protocol alone, with nothing but the Python standard library: it speaks
the NATS client protocol over a plain socket.

    python3 responder.py nats://127.0.0.1:4222 hosts.json

    python3 responder.py nats://127.0.0.1:4222 hosts.json seed.nk   # signed

hosts.json is {"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "...", ...}}}.
It answers lookups by MAC address and by IP address (the request data
carries exactly one of "MACAddress" and "IPAddress").

With a third argument, a file holding an nkeys seed ("SU..."), every reply
is signed as the README's wire section says: ed25519 over the request's id,
a NUL byte and the exact bytes of the reply's data, in the CloudEvents
extension attributes tinkerbellsig and tinkerbellsigner. The ed25519 code
below is the RFC 8032 reference algorithm, written out so that the file
still needs nothing but the standard library (it is slow, some
milliseconds per signature, and not hardened against timing attacks: a
real responder should use a maintained library, such as PyNaCl).

It prints "ready" once subscribed. Real responders should use a NATS client
library (nats-py); this file exists to prove the protocol is simple.
"""

import base64
import ipaddress
import datetime
import hashlib
import json
import re
import socket
import sys
import uuid
from urllib.parse import urlparse

SUBJECT = "tinkerbell.dhcp.backend"
QUEUE = "tinkerbell-dhcp-backend"
RESPONSE_TYPE = "org.tinkerbell.dhcp.backend.response"
REQUEST_TYPE = "org.tinkerbell.dhcp.backend.request"
MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


# --- ed25519 (RFC 8032, section 5.1), signing only --------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    """Adds two points in extended coordinates (x, y, z, t)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    A = (y1 - x1) * (y2 - x2) % P
    B = (y1 + x1) * (y2 + x2) % P
    C = 2 * t1 * t2 * D % P
    DD = 2 * z1 * z2 % P
    E, F, G, H = B - A, DD - C, DD + C, B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _recover_x(y, sign):
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if x & 1 != sign:
        x = P - x
    return x


_GY = 4 * pow(5, -1, P) % P
_GX = _recover_x(_GY, 0)
BASE = (_GX, _GY, 1, _GX * _GY % P)


def _compress(pt):
    zinv = pow(pt[2], -1, P)
    x, y = pt[0] * zinv % P, pt[1] * zinv % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _expand(secret):
    h = hashlib.sha512(secret).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


class Ed25519Key:
    """An ed25519 private key made from its 32-byte seed."""

    def __init__(self, seed):
        self.a, self.prefix = _expand(seed)
        self.public = _compress(_mul(self.a, BASE))

    def sign(self, msg):
        r = int.from_bytes(hashlib.sha512(self.prefix + msg).digest(), "little") % L
        R = _compress(_mul(r, BASE))
        h = int.from_bytes(hashlib.sha512(R + self.public + msg).digest(), "little") % L
        return R + int.to_bytes((r + h * self.a) % L, 32, "little")


# --- nkeys seeds and public keys ---------------------------------------------

def _crc16(data):
    """CRC-16/XMODEM (polynomial 0x1021), as nkeys uses."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


PREFIX_SEED = 18 << 3  # 'S'
PREFIX_USER = 20 << 3  # 'U'


def nkey_from_seed(text):
    """Returns the ed25519 key and the encoded public key of an nkeys seed."""
    text = text.strip()
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc or len(body) != 34 or body[0] & 0xF8 != PREFIX_SEED:
        raise ValueError("not an nkeys seed")
    kind = ((body[0] & 7) << 5) | ((body[1] & 0xF8) >> 3)
    key = Ed25519Key(body[2:])
    pub = bytes([kind]) + key.public
    pub += _crc16(pub).to_bytes(2, "little")
    return key, base64.b32encode(pub).decode().rstrip("=")


def signature(key, request_id, data):
    """The value of tinkerbellsig: unpadded base64url of the ed25519
    signature of request_id, a NUL byte and the data bytes."""
    sig = key.sign(request_id.encode() + b"\0" + data)
    return base64.urlsafe_b64encode(sig).decode().rstrip("=")


# --- the responder -------------------------------------------------------------

def norm_mac(s):
    return ":".join(s.replace("-", ":").lower().split(":"))


class Conn:
    def __init__(self, url):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 4222))
        self.buf = b""
        self.readline()  # INFO {...}
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "name": "python-responder", "lang": "python"}
        self.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")

    def send(self, data):
        self.sock.sendall(data)

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def readline(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def read(self, n):
        while len(self.buf) < n + 2:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self, subject, payload, headers):
        hdr = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        hdr = hdr.encode()
        self.send(f"HPUB {subject} {len(hdr)} {len(hdr) + len(payload)}\r\n".encode() + hdr + payload + b"\r\n")


def same_ip(s, ip):
    try:
        return isinstance(s, str) and ipaddress.ip_address(s) == ip
    except ValueError:
        return False


def answer(hosts, payload):
    """Returns the response data, the error code and the request's id for
    one request event ("" when it has none)."""
    request_id = ""
    try:
        event = json.loads(payload)
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            request_id = event["id"]
        if event.get("specversion") != "1.0" or event.get("type") != REQUEST_TYPE:
            raise ValueError("not a request event")
        for attr in ("id", "source"):  # required CloudEvents attributes
            if not isinstance(event.get(attr), str) or not event[attr]:
                raise ValueError(f"missing attribute {attr}")
        if "data_base64" in event:
            data = json.loads(base64.b64decode(event["data_base64"]))
        elif isinstance(event.get("data"), str):
            data = json.loads(event["data"])
        else:
            data = event["data"]
        mac = data.get("MACAddress") or data.get("MacAddress")
        ip = data.get("IPAddress")
        if mac and ip:
            raise ValueError("both MACAddress and IPAddress")
        if ip:  # a lookup by IP address
            if not isinstance(ip, str):
                raise ValueError("IPAddress is not a string")
            ip = ipaddress.ip_address(ip)
            if ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if ip.version != 4:
                raise ValueError("IPAddress is not IPv4")
        else:
            if not isinstance(mac, str) or not MAC.match(mac):
                raise ValueError("MACAddress is not a MAC address")
            mac = norm_mac(mac)
    except Exception as e:  # malformed request: 400
        return {"Error": {"Code": 400, "Message": f"bad request: {e}"}}, 400, request_id
    if ip:
        # The one host with this address; never another machine.
        macs = [m for m, h in hosts.items() if same_ip(h.get("IPAddress"), ip)]
        if len(macs) > 1:
            return {"Error": {"Code": 500, "Message": f"{ip} is the address of {len(macs)} hosts"}}, 500, request_id
        if not macs:
            return {"Error": {"Code": 404, "Message": f"no host has {ip}"}}, 404, request_id
        mac = macs[0]
    host = hosts.get(mac)
    if host is None:
        return {"Error": {"Code": 404, "Message": f"no reservation for {mac}"}, "MACAddress": mac}, 404, request_id
    body = dict(host)
    body["MACAddress"] = mac
    body["Error"] = {"Code": 0, "Message": ""}
    return body, 0, request_id


def main():
    url, hosts_file = sys.argv[1], sys.argv[2]
    with open(hosts_file) as f:
        hosts = {norm_mac(k): v for k, v in json.load(f)["hosts"].items()}
    key = signer = None
    if len(sys.argv) > 3:
        with open(sys.argv[3]) as f:
            key, signer = nkey_from_seed(f.read())
    nc = Conn(url)
    nc.send(f"SUB {SUBJECT} {QUEUE} 1\r\nPING\r\n".encode())
    pongs = 0  # one PONG answers CONNECT's PING, the second SUB's
    while True:
        line = nc.readline()
        op = line.split(" ", 1)[0]
        if op == "PING":
            nc.send(b"PONG\r\n")
        elif op == "PONG":
            pongs += 1
            if pongs == 2:  # the server has processed CONNECT and SUB
                print("ready", flush=True)
        elif op == "-ERR":
            print(line, file=sys.stderr, flush=True)
        elif op in ("MSG", "HMSG"):
            parts = line.split(" ")
            if op == "MSG":
                reply = parts[3] if len(parts) == 5 else None
                total, hlen = int(parts[-1]), 0
            else:
                reply = parts[3] if len(parts) == 6 else None
                hlen, total = int(parts[-2]), int(parts[-1])
            msg = nc.read(total)
            if reply is None:
                continue
            data, code, request_id = answer(hosts, msg[hlen:])
            attrs = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/python/responder",
                     "type": RESPONSE_TYPE,
                     "time": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
                     "datacontenttype": "application/json"}
            # The data bytes are written into the event exactly as signed.
            data_bytes = json.dumps(data).encode()
            event = json.dumps(attrs).encode()[:-1] + b', "data": ' + data_bytes
            if key is not None:
                event += (', "tinkerbellsig": "%s", "tinkerbellsigner": "%s"'
                          % (signature(key, request_id, data_bytes), signer)).encode()
            event += b"}"
            headers = {"Content-Type": "application/cloudevents+json"}
            if code:
                headers["Nats-Service-Error"] = data["Error"]["Message"]
                headers["Nats-Service-Error-Code"] = str(code)
            nc.reply(reply, event, headers)


if __name__ == "__main__":
    main()
