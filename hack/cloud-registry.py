#!/usr/bin/env python3
"""The test platform's stand-in for Azure Container Registry and Google's registries.

One TLS listener in front of a token-auth docker-registry (plain HTTP on loopback). Tests reach
it under cloud host names through a proxy that maps the names here, and it answers as the cloud
whose name it was reached by (the Host header):

- <name>.azurecr.io (and .cn/.de/.us): ACR. POST /oauth2/exchange trades an Entra ID access
  token for a refresh token (a JWT with `exp`); GET/POST /oauth2/token trades the refresh token
  (as the password of 00000000-0000-0000-0000-000000000000, or as `refresh_token`) for a
  registry token. Challenges name https://<host>/oauth2/token.
- gcr.io, *.gcr.io, *-docker.pkg.dev: Artifact Registry. GET /v2/token trades a Google access
  token (the password of `oauth2accesstoken`) for a registry token. Challenges name
  https://<host>/v2/token.
- sts.googleapis.com: Google STS. POST /v1/token exchanges a Kubernetes ServiceAccount token
  (checked: a JWT whose audience is the requested `audience`, or the GKE identity namespace
  it names) for the Google access token; iamcredentials.googleapis.com impersonates.
- <vault>.vault.azure.net: Azure Key Vault's `encrypt`/`decrypt` of keys (RSA-OAEP-256 with an
  RSA key made on first use of each vault and key name), for Entra ID tokens of the prefix.
- cloudkms.googleapis.com (and any name, for paths /v1/projects/…/cryptoKeys/<k>:encrypt or
  :decrypt, as sops reaches it with SOPS_GCP_KMS_ENDPOINT): Cloud KMS, AES-GCM under a key made
  on first use of each resource, for Google access tokens of the prefix.
- any other name (127.0.0.1): the registry with its admin login (as ACR's admin user).

Under every name it also takes Kubernetes ServiceAccount tokens (Flux's `kubernetes` credential
provider, as registries with OIDC workload identity federation do): a bearer token on a /v2/
request, or the password of Basic auth at the token endpoint. Each is checked with a
TokenReview at the platform's API server, for the audience of the name it was reached by
(host:port), and logged (`tokenreview bearer|basic ok for <user>`) for tests to find.

Cloud tokens are honoured only with the prefix it is told (--entra-token, --google-token) and
then name their identity (`<prefix>:<identity>`): a test's Entra ID and metadata server issue
them so, and its own Google STS answers `<prefix>:sts:<ServiceAccount>` (after a TokenReview of
the subject token for the requested audience) and IAM credentials `<prefix>:gsa:<email>`. Each
accepted login is logged with that identity (`acr exchange ok for …`, `gar login ok for …`), so
tests can tell whose credential reached the registry. Every refusal says why, in the body.
"""
import argparse
import base64
import http.client
import json
import re
import secrets
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ACR_USER = "00000000-0000-0000-0000-000000000000"
GOOGLE_USER = "oauth2accesstoken"
ACR_HOST = re.compile(r"^[a-z0-9.-]+\.azurecr\.(io|cn|de|us)$")
KEY_VAULT_HOST = re.compile(r"^[a-z0-9-]+\.vault\.azure\.net$")
KMS_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+):(encrypt|decrypt)$")
KEY_VAULT_PATH = re.compile(r"^/keys/([^/]+)/([^/]+)/(encrypt|decrypt)$")
GOOGLE_HOST = re.compile(r"^(([a-z0-9.-]+\.)?gcr\.io|[a-z0-9.-]+-docker\.pkg\.dev)$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--backend", required=True, help="host:port of the token-auth registry")
    p.add_argument("--signer-key", required=True)
    p.add_argument("--signer-cert", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True, help="the registry's configured token service")
    p.add_argument("--admin", required=True, help="user:password that may push and pull")
    p.add_argument("--entra-token", required=True, help="prefix of the Entra ID access tokens ACR accepts")
    p.add_argument("--google-token", required=True, help="prefix of the Google access tokens accepted")
    p.add_argument("--apiserver", required=True, help="https://host:port of the API server (TokenReview)")
    p.add_argument("--kube-ca", required=True)
    p.add_argument("--kube-cert", required=True, help="a client certificate allowed to create TokenReviews")
    p.add_argument("--kube-key", required=True)
    return p.parse_args()


def make_handler(args):
    key = serialization.load_pem_private_key(open(args.signer_key, "rb").read(), password=None)
    cert = x509.load_pem_x509_certificate(open(args.signer_cert, "rb").read())
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    admin = tuple(args.admin.split(":", 1))
    refresh_tokens = set()  # (registry host, token)
    entra_prefix, google_prefix = args.entra_token + ":", args.google_token + ":"
    vault_keys = {}  # (vault host, key name) -> RSA private key
    kms_keys = {}  # Cloud KMS resource -> AES-256 key

    def sign(claims):
        header = {"typ": "JWT", "alg": "ES256", "x5c": x5c}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def registry_token(subject, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) == 3 and parts[0] == "repository":
                access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
        now = int(time.time())
        return sign({"iss": args.issuer, "sub": subject, "aud": args.service, "exp": now + 300,
                     "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access})

    kube = ssl.create_default_context(cafile=args.kube_ca)
    kube.load_cert_chain(args.kube_cert, args.kube_key)
    apiserver = urlparse(args.apiserver)

    def token_review(token, audience):
        """The user a ServiceAccount token authenticates for `audience`, or (None, why)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token, "audiences": [audience]}}
        conn = http.client.HTTPSConnection(apiserver.hostname, apiserver.port, context=kube, timeout=10)
        conn.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", json.dumps(review),
                     {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read() or b"{}")
        conn.close()
        status = answer.get("status") or {}
        if status.get("authenticated"):
            return status.get("user", {}).get("username"), None
        return None, status.get("error") or answer.get("message") or "not authenticated"

    def is_service_account_token(token):
        claims = jwt_claims(token)
        return bool(claims) and claims.get("iss") != args.issuer and "kubernetes.io" in claims

    def jwt_claims(token):
        try:
            return json.loads(unb64url(token.split(".")[1]))
        except Exception:  # any malformed token is refused by the caller
            return None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("cloud-registry: " + (fmt % a) + "\n")

        def host(self):
            """The name the client reached this by, without the port."""
            return re.sub(r":\d+$", "", self.authority()).lower()

        def authority(self):
            return self.headers.get("Host") or ""

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline().strip():
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def answer(self, status, payload, headers=()):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def refuse(self, status, why):
            self.answer(status, {"errors": [{"code": "UNAUTHORIZED", "message": why}]})

        def basic(self):
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Basic "):
                return None
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return None
            return user, password

        def cloud(self):
            host = self.host()
            if ACR_HOST.match(host):
                return "acr"
            if GOOGLE_HOST.match(host):
                return "google"
            if host == "sts.googleapis.com":
                return "google-sts"
            if host == "iamcredentials.googleapis.com":
                return "google-iam"
            if KEY_VAULT_HOST.match(host):
                return "keyvault"
            if host == "cloudkms.googleapis.com":
                return "cloudkms"
            return "admin"

        def dispatch(self):
            url = urlparse(self.path)
            cloud = self.cloud()
            route = (cloud, self.command, url.path)
            if route == ("acr", "POST", "/oauth2/exchange"):
                return self.acr_exchange(url)
            if cloud in ("acr", "admin") and url.path == "/oauth2/token" and self.command in ("GET", "POST"):
                return self.acr_token(url)
            if cloud == "google" and route[1:] == ("GET", "/v2/token"):
                return self.google_token(url)
            if route == ("google-sts", "POST", "/v1/token"):
                return self.google_sts()
            if cloud == "google-iam" and self.command == "POST" and url.path.endswith(":generateAccessToken"):
                return self.google_impersonate()
            if cloud == "keyvault" and self.command == "POST" and KEY_VAULT_PATH.match(url.path):
                return self.key_vault(KEY_VAULT_PATH.match(url.path))
            if self.command == "POST" and KMS_PATH.match(url.path):
                return self.cloud_kms(KMS_PATH.match(url.path))
            if url.path == "/v2" or url.path.startswith("/v2/"):
                return self.relay(cloud)
            self.refuse(404, f"no route for {self.command} {url.path} on {cloud}")

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = dispatch

        def acr_exchange(self, url):
            form = parse_qs(self.body().decode())
            field = lambda k: (form.get(k) or [""])[0]
            if "api-version" not in parse_qs(url.query):
                return self.refuse(400, "api-version is required")
            if field("grant_type") != "access_token":
                return self.refuse(400, f"grant_type must be access_token, not {field('grant_type')!r}")
            if field("service") != self.host():
                return self.refuse(400, f"service must be {self.host()}, not {field('service')!r}")
            if not field("access_token").startswith(entra_prefix):
                return self.refuse(401, "the Entra ID access token is not valid for this registry")
            self.log_message("acr exchange ok for %s at %s", field("access_token")[len(entra_prefix):], self.host())
            refresh = sign({"iss": "driftless-acr", "sub": "entra", "exp": int(time.time()) + 3 * 3600,
                            "grant_type": "refresh_token", "jti": secrets.token_hex(8)})
            refresh_tokens.add((self.host(), refresh))
            self.answer(200, {"refresh_token": refresh})

        def acr_token(self, url):
            query = parse_qs(url.query)
            if self.command == "POST":
                query.update(parse_qs(self.body().decode()))
                credential = (ACR_USER, (query.get("refresh_token") or [""])[0])
            else:
                credential = self.basic()
            if credential == admin:
                subject = admin[0]
            elif self.cloud() == "acr" and credential and credential[0] == ACR_USER \
                    and (self.host(), credential[1]) in refresh_tokens:
                subject = "entra"
            elif credential and is_service_account_token(credential[1]):
                subject, why = token_review(credential[1], self.authority())
                if not subject:
                    self.log_message("tokenreview basic refused for %s: %s", (jwt_claims(credential[1]) or {}).get("sub"), why)
                    return self.refuse(401, f"token review: {why}")
                self.log_message("tokenreview basic ok for %s as %s", subject, credential[0])
            else:
                return self.refuse(401, "unknown credentials")
            token = registry_token(subject, query.get("scope", []))
            self.answer(200, {"access_token": token, "refresh_token": credential[1]})

        def google_token(self, url):
            credential = self.basic()
            subject = credential[0] if credential else None
            if credential and is_service_account_token(credential[1]):
                subject, why = token_review(credential[1], self.authority())
                if not subject:
                    self.log_message("tokenreview basic refused for %s: %s", (jwt_claims(credential[1]) or {}).get("sub"), why)
                    return self.refuse(401, f"token review: {why}")
                self.log_message("tokenreview basic ok for %s as %s", subject, credential[0])
            elif credential and credential[0] == GOOGLE_USER and credential[1].startswith(google_prefix):
                self.log_message("gar login ok for %s", credential[1][len(google_prefix):])
            elif credential != admin:
                return self.refuse(401, "unknown credentials")
            token = registry_token(subject, parse_qs(url.query).get("scope", []))
            self.answer(200, {"token": token, "access_token": token, "expires_in": 300})

        def google_sts(self):
            form = parse_qs(self.body().decode())
            field = lambda k: (form.get(k) or [""])[0]
            expected = {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            }
            for k, v in expected.items():
                if field(k) != v:
                    return self.answer(400, {"error": "invalid_request", "error_description": f"{k} must be {v}"})
            audience = field("audience")
            # A pool provider's audience is the token's; GKE's names the identity namespace.
            wanted = audience.split(":")[1] if audience.startswith("identitynamespace:") else audience
            if not audience.startswith(("//iam.googleapis.com/projects/", "identitynamespace:")):
                return self.answer(400, {"error": "invalid_request", "error_description": f"unknown audience {audience!r}"})
            subject, why = token_review(field("subject_token"), wanted)
            if not subject:
                return self.answer(400, {"error": "invalid_grant", "error_description": f"the subject token is not valid for {audience!r}: {why}"})
            if "cloud-platform" not in field("scope"):
                return self.answer(400, {"error": "invalid_scope", "error_description": "scope must include cloud-platform"})
            self.log_message("google sts ok for %s", subject)
            self.answer(200, {"access_token": f"{google_prefix}sts:{subject}", "expires_in": 3600, "token_type": "Bearer",
                              "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})

        def google_impersonate(self):
            federated = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if not federated.startswith(google_prefix + "sts:"):
                return self.answer(401, {"error": {"code": 401, "message": "not a federated token of this STS"}})
            email = re.match(r"^/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken$", urlparse(self.path).path)
            scopes = (json.loads(self.body() or b"{}").get("scope") or [])
            if not email or not any("cloud-platform" in s for s in scopes):
                return self.answer(400, {"error": {"code": 400, "message": "a service account and the cloud-platform scope are required"}})
            self.log_message("google impersonation ok for %s by %s", email.group(1), federated[len(google_prefix) + 4:])
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            self.answer(200, {"accessToken": f"{google_prefix}gsa:{email.group(1)}", "expireTime": expires})

        def bearer(self, prefix):
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            return token[len(prefix):] if token.startswith(prefix) else None

        def key_vault(self, match):
            """Key Vault's RSA-OAEP-256 encrypt/decrypt (values base64url without padding)."""
            who = self.bearer(entra_prefix)
            if who is None:
                return self.answer(401, {"error": {"code": "Unauthorized", "message": "AKV10000: the token is not one of this tenant"}})
            name, version, op = match.groups()
            request = json.loads(self.body() or b"{}")
            if request.get("alg") != "RSA-OAEP-256":
                return self.answer(400, {"error": {"code": "BadParameter", "message": f"unsupported alg {request.get('alg')}"}})
            key = vault_keys.setdefault((self.host(), name), rsa.generate_private_key(public_exponent=65537, key_size=2048))
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
            try:
                value = unb64url(request.get("value", ""))
                out = key.public_key().encrypt(value, oaep) if op == "encrypt" else key.decrypt(value, oaep)
            except Exception as e:
                return self.answer(400, {"error": {"code": "BadParameter", "message": f"{op} failed: {type(e).__name__}"}})
            self.log_message("keyvault %s ok for %s on %s/%s", op, who, self.host(), name)
            self.answer(200, {"kid": f"https://{self.host()}/keys/{name}/{version}", "value": b64url(out)})

        def cloud_kms(self, match):
            """Cloud KMS encrypt/decrypt (standard base64): nonce and ciphertext under the resource's key."""
            who = self.bearer(google_prefix)
            if who is None:
                return self.answer(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})
            resource, op = match.groups()
            request = json.loads(self.body() or b"{}")
            aes = AESGCM(kms_keys.setdefault(resource, AESGCM.generate_key(bit_length=256)))
            try:
                if op == "encrypt":
                    nonce = secrets.token_bytes(12)
                    out = {"name": resource + "/cryptoKeyVersions/1", "ciphertext": base64.b64encode(nonce + aes.encrypt(nonce, base64.b64decode(request["plaintext"]), None)).decode()}
                else:
                    data = base64.b64decode(request["ciphertext"])
                    out = {"plaintext": base64.b64encode(aes.decrypt(data[:12], data[12:], None)).decode()}
            except Exception as e:
                return self.answer(400, {"error": {"code": 400, "message": f"Decryption failed: {type(e).__name__}", "status": "INVALID_ARGUMENT"}})
            self.log_message("cloudkms %s ok for %s on %s", op, who, resource)
            self.answer(200, out)

        def relay(self, cloud):
            """The request to the registry behind; its challenge rewritten to name this host."""
            data = self.body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if bearer and is_service_account_token(bearer):
                subject, why = token_review(bearer, self.authority())
                if not subject:
                    self.log_message("tokenreview bearer refused for %s: %s", (jwt_claims(bearer) or {}).get("sub"), why)
                    return self.refuse(401, f"token review: {why}")
                self.log_message("tokenreview bearer ok for %s", subject)
                repository = re.match(r"^/v2/(.+)/(manifests|blobs|tags)/", urlparse(self.path).path)
                scopes = [f"repository:{repository.group(1)}:pull"] if repository else []
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                headers["Authorization"] = "Bearer " + registry_token(subject, scopes)
            if data or self.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(data))
            backend = http.client.HTTPConnection(args.backend, timeout=60)
            backend.request(self.command, self.path, body=data, headers=headers)
            response = backend.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                    continue
                if k.lower() == "www-authenticate":
                    realm = "/v2/token" if cloud == "google" else "/oauth2/token"
                    v = re.sub(r'realm="[^"]*"', f'realm="https://{self.authority()}{realm}"', v)
                    v = re.sub(r'service="[^"]*"', f'service="{self.host()}"', v)
                self.send_header(k, v)
            length = response.getheader("Content-Length")
            self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            backend.close()

    return Handler


def main():
    args = parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
