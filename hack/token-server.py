#!/usr/bin/env python3
"""A Docker registry token server for the test platform (the distribution token auth flow).

GET /token?service=S&scope=repository:NAME:ACTIONS returns an ES256 JWT whose x5c header holds
the signing certificate (trusted by the registry through its rootcertbundle). Requests with the
right Basic credentials get the actions they ask for; anonymous requests get a token with no
access (so the registry answers 401, as real registries do); wrong credentials get 401 here.
"""
import argparse
import base64
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", required=True, help="user:password allowed to pull and push")
    return p.parse_args()


def make_handler(args):
    key = serialization.load_pem_private_key(open(args.key, "rb").read(), password=None)
    cert = x509.load_pem_x509_certificate(open(args.cert, "rb").read())
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    expected = "Basic " + base64.b64encode(args.user.encode()).decode()

    def sign(claims):
        header = {"typ": "JWT", "alg": "ES256", "x5c": x5c}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            sys.stderr.write("token-server: " + (fmt % a) + "\n")

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_error(404)
                return
            query = parse_qs(url.query)
            auth = self.headers.get("Authorization")
            if auth is not None and auth != expected:
                self.send_response(401)
                self.end_headers()
                return
            access = []
            if auth == expected:
                for scope in query.get("scope", []):
                    parts = scope.split(":")
                    if len(parts) == 3 and parts[0] == "repository":
                        access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
            now = int(time.time())
            claims = {
                "iss": args.issuer,
                "sub": args.user.split(":")[0] if auth else "",
                "aud": query.get("service", [args.service])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": access,
            }
            token = sign(claims)
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main():
    args = parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args)).serve_forever()


if __name__ == "__main__":
    main()
