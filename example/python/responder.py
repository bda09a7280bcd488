#!/usr/bin/env python3
"""A responder for github.com/tinkerbell/backend written from the README's
wire protocol alone, with nothing but the Python standard library: it speaks
the NATS client protocol over a plain socket.

    python3 responder.py nats://127.0.0.1:4222 hosts.json

hosts.json is {"hosts": {"52:54:00:66:ea:9a": {"IPAddress": "...", ...}}}.
It answers lookups by MAC address and by IP address (the request data
carries exactly one of "MACAddress" and "IPAddress").
It prints "ready" once subscribed. Real responders should use a NATS client
library (nats-py); this file exists to prove the protocol is simple.
"""

import base64
import ipaddress
import datetime
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
    """Returns the response data and the error code for one request event."""
    try:
        event = json.loads(payload)
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
        return {"Error": {"Code": 400, "Message": f"bad request: {e}"}}, 400
    if ip:
        # The one host with this address; never another machine.
        macs = [m for m, h in hosts.items() if same_ip(h.get("IPAddress"), ip)]
        if len(macs) > 1:
            return {"Error": {"Code": 500, "Message": f"{ip} is the address of {len(macs)} hosts"}}, 500
        if not macs:
            return {"Error": {"Code": 404, "Message": f"no host has {ip}"}}, 404
        mac = macs[0]
    host = hosts.get(mac)
    if host is None:
        return {"Error": {"Code": 404, "Message": f"no reservation for {mac}"}}, 404
    body = dict(host)
    body["MACAddress"] = mac
    body["Error"] = {"Code": 0, "Message": ""}
    return body, 0


def main():
    url, hosts_file = sys.argv[1], sys.argv[2]
    with open(hosts_file) as f:
        hosts = {norm_mac(k): v for k, v in json.load(f)["hosts"].items()}
    nc = Conn(url)
    nc.send(f"SUB {SUBJECT} {QUEUE} 1\r\nPING\r\n".encode())
    ready = False
    while True:
        line = nc.readline()
        op = line.split(" ", 1)[0]
        if op == "PING":
            nc.send(b"PONG\r\n")
        elif op == "PONG":
            if not ready:  # the server has processed CONNECT and SUB
                ready = True
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
            data, code = answer(hosts, msg[hlen:])
            event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/python/responder",
                     "type": RESPONSE_TYPE,
                     "time": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
                     "datacontenttype": "application/json", "data": data}
            headers = {"Content-Type": "application/cloudevents+json"}
            if code:
                headers["Nats-Service-Error"] = data["Error"]["Message"]
                headers["Nats-Service-Error-Code"] = str(code)
            nc.reply(reply, json.dumps(event).encode(), headers)


if __name__ == "__main__":
    main()
