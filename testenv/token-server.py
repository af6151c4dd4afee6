#!/usr/bin/python3 -I
"""A minimal Docker registry token server for the token-auth test registry.

It implements what a client meets at a real token-auth registry (Docker Hub, GitLab, Harbor):
the registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, the
client asks this server for a token (GET with Basic credentials, or the OAuth2 POST form: a password, or a refresh token as docker's identity tokens are), and
retries with `Authorization: Bearer <jwt>`.

Policy: the one configured user gets every action it asks for; a request without credentials gets
a token with no access (as Docker Hub does for anonymous pulls of private repositories, so the
registry then answers 401); wrong credentials get 401 here. Tokens are RS256 JWTs whose `kid` is
the libtrust key id of the signing key, which the registry derives from the certificate in its
`rootcertbundle`. Only the Python standard library and python3-cryptography are used, and it only
ever listens on a loopback address.
"""

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

TOKEN_LIFETIME = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_der: bytes) -> str:
    """The key id docker/libtrust gives a public key: base32 of 240 bits of its SHA-256, in
    colon-separated groups of four."""
    encoded = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def parse_scopes(values):
    """`type:name:action,action` items (several per value when space-separated)."""
    scopes = []
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep and sep2 and kind and name):
                raise ValueError(f"malformed scope {item!r}")
            scopes.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
    return scopes


class Issuer:
    def __init__(self, args):
        with open(args.key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(args.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        public_der = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        own_der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public_der != own_der:
            sys.exit(f"token-server: {args.cert} does not hold the public key of {args.key}")
        self.kid = libtrust_key_id(public_der)
        self.issuer = args.issuer
        self.service = args.service
        self.user = args.user
        with open(args.password_file) as f:
            self.password = f.read().rstrip("\n")

    def refresh_token(self) -> str:
        """The one identity (refresh) token this server honours: derived from the user's
        password, so a test can compute it as `refresh-` + the first 32 hex digits of
        sha256("user:password")."""
        digest = hashlib.sha256(f"{self.user}:{self.password}".encode()).hexdigest()
        return "refresh-" + digest[:32]

    def check(self, user, password) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and password_ok

    def issue(self, subject, access) -> dict:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = signing_input + "." + b64url(signature)
        issued = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME, "issued_at": issued}


class Handler(BaseHTTPRequestHandler):
    server_version = "dockless-test-token-server"
    issuer: Issuer = None  # set in main

    def send_json(self, status, body, extra_headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def fail(self, status, code, message):
        headers = [("WWW-Authenticate", 'Basic realm="dockless-test-token-server"')] if status == 401 else []
        self.send_json(status, {"errors": [{"code": code, "message": message}]}, headers)

    def grant(self, service, scope_values, credentials):
        """credentials: None (anonymous) or (user, password)."""
        if service is not None and service != self.issuer.service:
            return self.fail(400, "INVALID_REQUEST", f"unknown service {service!r}")
        try:
            scopes = parse_scopes(scope_values)
        except ValueError as e:
            return self.fail(400, "INVALID_REQUEST", str(e))
        if credentials is None:
            return self.send_json(200, self.issuer.issue("", []))
        user, password = credentials
        if not self.issuer.check(user, password):
            return self.fail(401, "UNAUTHORIZED", "invalid username or password")
        self.send_json(200, self.issuer.issue(user, scopes))

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.fail(404, "NOT_FOUND", f"no such endpoint {url.path}")
        query = urllib.parse.parse_qs(url.query)
        credentials = None
        header = self.headers.get("Authorization")
        if header is not None:
            kind, _, value = header.partition(" ")
            if kind.lower() != "basic":
                return self.fail(401, "UNAUTHORIZED", "only Basic credentials are accepted")
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.fail(401, "UNAUTHORIZED", "malformed Basic credentials")
            if not sep:
                return self.fail(401, "UNAUTHORIZED", "malformed Basic credentials")
            credentials = (user, password)
        self.grant(query.get("service", [None])[0], query.get("scope", []), credentials)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.fail(404, "NOT_FOUND", f"no such endpoint {url.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            return self.fail(400, "INVALID_REQUEST", "request body too large")
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        grant_type = form.get("grant_type", [""])[0]
        if grant_type == "refresh_token":
            token = form.get("refresh_token", [""])[0]
            if not hmac.compare_digest(token.encode(), self.issuer.refresh_token().encode()):
                return self.fail(401, "UNAUTHORIZED", "invalid refresh token")
            credentials = (self.issuer.user, self.issuer.password)
            return self.grant(form.get("service", [None])[0], form.get("scope", []), credentials)
        if grant_type != "password":
            return self.fail(400, "UNSUPPORTED_GRANT_TYPE", f"grant_type {grant_type!r} is not supported")
        credentials = (form.get("username", [""])[0], form.get("password", [""])[0])
        self.grant(form.get("service", [None])[0], form.get("scope", []), credentials)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.log_date_time_string()} {self.address_string()} {fmt % args}\n")
        sys.stderr.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:5003", help="loopback HOST:PORT")
    p.add_argument("--key", required=True, help="PEM RSA private key that signs tokens")
    p.add_argument("--cert", required=True, help="PEM certificate of that key (the registry's rootcertbundle)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"token-server: refusing to listen on non-loopback address {host}")
    Handler.issuer = Issuer(args)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    sys.stderr.write(f"token-server: listening on {host}:{port}, kid {Handler.issuer.kid}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
