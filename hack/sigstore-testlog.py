#!/usr/bin/env python3
"""Offline Sigstore test material that the real cosign accepts: a Fulcio-like CA, a transparency
log key, a trusted root, and Rekor v1 log entries written into the bundles cosign v3 attaches.

    ca --dir D --subject SUBJECT --issuer ISSUER [--validity-hours N] [--reuse-ca D0]
        D/root.crt, D/inter.crt, D/chain.pem (inter, then root), D/leaf.crt, D/leaf-key.pem
        (PKCS#8 P-256, unencrypted), and the CA keys D/root-key.pem, D/inter-key.pem.
        Root and intermediate are P-384 as Fulcio's; the leaf is Fulcio-like: empty subject,
        critical SAN (email when SUBJECT has an '@' and no "scheme:", else URI), digitalSignature,
        codeSigning, issuer in 1.3.6.1.4.1.57264.1.1 (raw bytes) and .1.8 (DER UTF8String).
        The leaf is valid from 10 minutes ago for N hours (default 4), so the default integrated
        time of add-log-entry (now - 60 s) falls inside. --reuse-ca D0 issues the leaf from D0's
        intermediate (D0 made by `ca`), so several identities share one CA and one trusted root.
    log-key --out FILE
        an ECDSA P-256 transparency-log private key (PKCS#8 PEM).
    trusted-root --chain CHAIN.pem --log-key KEY.pem --out FILE [--fulcio-url URL] [--log-url URL]
                 [--valid-from RFC3339]
        a Sigstore trusted root (mediaType application/vnd.dev.sigstore.trustedroot+json;version=0.1)
        with the chain as a certificate authority and the key as a Rekor log. KEY may be the
        private key or its public key. Both are valid from the chain root's notBefore (a day
        before `ca` ran) unless --valid-from says otherwise. No CT logs, no TSAs.
    add-log-entry --registry HOST:PORT --repo REPO --digest sha256:HEX --log-key KEY.pem
                  [--log-index N] [--integrated-time UNIX] [--no-promise] [--no-proof]
                  [--public-key cosign.pub] [--log-url URL]
        for every Sigstore bundle attached to REPO@DIGEST: add the transparency-log entry Rekor v1
        would return (dsse v0.0.1 or hashedrekord v0.0.1 body; inclusion promise = SET; inclusion
        proof in a tree of N+4 leaves with a signed checkpoint) in place of any entry it had,
        and replace the bundle in the registry. Prints each new bundle, one JSON line each.
        A key-based bundle names its key only by a hint: pass the public key with --public-key.
        N defaults to 7, the time to now - 60 s.
    add-legacy-log-entry --registry HOST:PORT --repo REPO --digest sha256:HEX --log-key KEY.pem
                  [--log-index N] [--integrated-time UNIX] [--public-key cosign.pub]
        for cosign's legacy format (tag sha256-HEX.sig, one simple-signing layer per signature):
        give every layer the `dev.sigstore.cosign/bundle` annotation cosign v2 writes when it
        uploads to Rekor v1 (SignedEntryTimestamp over a hashedrekord v0.0.1 body: sha256 of the
        layer's payload, its signature, its certificate or --public-key), replacing any it had,
        and push the manifest again under the same tag (blobs unchanged). Layer i gets log index
        N + i. Prints one JSON line per layer.
    copy-bundle --registry HOST:PORT --repo REPO --from sha256:A --to sha256:B
        attaches A's bundles, unchanged, as referrers of B too. Prints the new manifest digests.
    corrupt-signature --registry HOST:PORT --repo REPO --digest sha256:X
        replaces X's bundles by copies with one bit of the DSSE (or message) signature flipped.
        Prints each new bundle, one JSON line each.

Registries are spoken to over plain HTTP without credentials. Bundles are found through the
referrers API (GET /v2/REPO/referrers/DIGEST) or, where it is missing (distribution 2.8), the
`sha256-HEX` tag-schema index, as cosign does. "Replacing" a bundle: the new bundle blob and a new
referrer manifest (same config, subject, artifactType and annotations) are pushed, the old
manifest is deleted, and on a registry without the referrers API the sha256-HEX index is
rewritten to list the new manifest instead of the old. Needs python3 and `cryptography` only.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
OID_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
DEFAULT_FULCIO_URL = "https://fulcio.test.invalid"
DEFAULT_LOG_URL = "https://rekor.test.invalid"
MAX_LOG_INDEX = 100_000  # the whole tree is computed, so keep it small


class Fail(Exception):
    pass


def log(msg):
    print(f"[sigstore-testlog] {msg}", file=sys.stderr)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical_json(obj) -> bytes:
    """RFC 8785 (JCS) for what is used here: objects, ASCII strings and integers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# keys and certificates


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def read_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def read_public_key(path):
    """A PEM public key, or the public half of a PEM private key."""
    with open(path, "rb") as f:
        pem = f.read()
    if b"PRIVATE KEY" in pem:
        return serialization.load_pem_private_key(pem, password=None).public_key()
    return serialization.load_pem_public_key(pem)


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def read_certs(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def der_utf8string(s: str) -> bytes:
    data = s.encode()
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x0c" + length + data


def issue(subject, public_key, issuer_cert, issuer_key, not_before, not_after, extensions):
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert else subject)
         .public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),
                            critical=False)
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    hash_alg = hashes.SHA384() if issuer_key.curve.key_size >= 384 else hashes.SHA256()
    return b.sign(issuer_key, hash_alg)


def ca_usage():
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False)


def write_pem_certs(path, certs):
    with open(path, "wb") as f:
        for c in certs:
            f.write(c.public_bytes(serialization.Encoding.PEM))


def cmd_ca(a):
    os.makedirs(a.dir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    if a.reuse_ca:
        for name in ("root.crt", "inter.crt", "chain.pem", "root-key.pem", "inter-key.pem"):
            src = os.path.join(a.reuse_ca, name)
            if not os.path.exists(src):
                raise Fail(f"--reuse-ca {a.reuse_ca}: {name} is missing (make it with `ca` first)")
            if os.path.abspath(src) != os.path.abspath(os.path.join(a.dir, name)):
                shutil.copyfile(src, os.path.join(a.dir, name))
        inter = read_certs(os.path.join(a.dir, "inter.crt"))[0]
        inter_key = read_key(os.path.join(a.dir, "inter-key.pem"))
    else:
        ca_from, ca_to = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "driftless-test")
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, "sigstore-testlog-root")])
        root = issue(root_name, root_key.public_key(), None, root_key, ca_from, ca_to, [
            (x509.BasicConstraints(ca=True, path_length=None), True), (ca_usage(), True)])
        inter_key = ec.generate_private_key(ec.SECP384R1())
        inter_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, "sigstore-testlog-intermediate")])
        inter = issue(inter_name, inter_key.public_key(), root, root_key, ca_from, ca_to, [
            (x509.BasicConstraints(ca=True, path_length=0), True), (ca_usage(), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)])
        write_key(os.path.join(a.dir, "root-key.pem"), root_key)
        write_key(os.path.join(a.dir, "inter-key.pem"), inter_key)
        write_pem_certs(os.path.join(a.dir, "root.crt"), [root])
        write_pem_certs(os.path.join(a.dir, "inter.crt"), [inter])
        write_pem_certs(os.path.join(a.dir, "chain.pem"), [inter, root])

    if "@" in a.subject and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", a.subject):
        san = x509.RFC822Name(a.subject)
    else:
        san = x509.UniformResourceIdentifier(a.subject)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_from = now - datetime.timedelta(minutes=10)
    leaf = issue(x509.Name([]), leaf_key.public_key(), inter, inter_key, leaf_from,
                 leaf_from + datetime.timedelta(hours=a.validity_hours), [
                     (x509.SubjectAlternativeName([san]), True),
                     (x509.KeyUsage(digital_signature=True, content_commitment=False,
                                    key_encipherment=False, data_encipherment=False,
                                    key_agreement=False, key_cert_sign=False, crl_sign=False,
                                    encipher_only=False, decipher_only=False), True),
                     (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
                     (x509.UnrecognizedExtension(OID_ISSUER_V1, a.issuer.encode()), False),
                     (x509.UnrecognizedExtension(OID_ISSUER_V2, der_utf8string(a.issuer)), False)])
    write_key(os.path.join(a.dir, "leaf-key.pem"), leaf_key)
    write_pem_certs(os.path.join(a.dir, "leaf.crt"), [leaf])
    log(f"{a.dir}: leaf for {a.subject} (issuer {a.issuer}), valid until {rfc3339(leaf.not_valid_after_utc)}")


def cmd_log_key(a):
    write_key(a.out, ec.generate_private_key(ec.SECP256R1()))


def cmd_trusted_root(a):
    chain = read_certs(a.chain)
    if not chain:
        raise Fail(f"{a.chain}: no certificate")
    log_pub = read_public_key(a.log_key)
    if not isinstance(log_pub, ec.EllipticCurvePublicKey) or log_pub.curve.name != "secp256r1":
        raise Fail(f"{a.log_key}: the log key must be ECDSA P-256")
    start = a.valid_from or rfc3339(chain[-1].not_valid_before_utc)

    def name_attr(oid):
        v = chain[-1].subject.get_attributes_for_oid(oid)
        return v[0].value if v else ""

    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": a.log_url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(spki(log_pub)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": start}},
            "logId": {"keyId": b64(sha256(spki(log_pub)))},
        }],
        "certificateAuthorities": [{
            "subject": {"organization": name_attr(NameOID.ORGANIZATION_NAME),
                        "commonName": name_attr(NameOID.COMMON_NAME)},
            "uri": a.fulcio_url,
            "certChain": {"certificates": [
                {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in chain]},
            "validFor": {"start": start},
        }],
        "ctlogs": [],
        "timestampAuthorities": [],
    }
    with open(a.out, "w") as f:
        json.dump(root, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# the registry: plain HTTP, anonymous

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, ok=(200,)):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=30) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    except OSError as e:
        raise Fail(f"{method} {url}: {e}") from e
    if ok is not None and status not in ok:
        raise Fail(f"{method} {url}: HTTP {status}: {data[:300].decode(errors='replace')}")
    return status, hdrs, data


class Registry:
    def __init__(self, host, repo):
        self.base = f"http://{host}/v2/{repo}"
        self.name = f"{host}/{repo}"
        self._referrers_api = None

    def manifest(self, ref):
        _, hdrs, data = http("GET", f"{self.base}/manifests/{ref}",
                             headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        return json.loads(data), hdrs.get("Content-Type", "").split(";")[0]

    def descriptor(self, digest):
        """The descriptor of a manifest in the repository (for a subject)."""
        _, hdrs, data = http("GET", f"{self.base}/manifests/{digest}",
                             headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}, "
                                                "application/vnd.docker.distribution.manifest.v2+json"})
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise Fail(f"{self.base}/manifests/{digest}: the registry answered another manifest")
        return {"mediaType": hdrs.get("Content-Type", "").split(";")[0], "digest": digest, "size": len(data)}

    def blob(self, digest):
        _, _, data = http("GET", f"{self.base}/blobs/{digest}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise Fail(f"blob {digest}: content does not match its digest")
        return data

    def push_blob(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _, hdrs, _ = http("POST", f"{self.base}/blobs/uploads/", b"", ok=(202,))
        loc = urllib.parse.urljoin(self.base + "/", hdrs["Location"])
        loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)
        http("PUT", loc, data, {"Content-Type": "application/octet-stream"}, ok=(201,))
        return digest

    def push_manifest(self, ref, manifest, media_type):
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        http("PUT", f"{self.base}/manifests/{ref or digest}", raw, {"Content-Type": media_type},
             ok=(200, 201, 202))
        return {"mediaType": media_type, "digest": digest, "size": len(raw)}

    def delete_manifest(self, digest):
        status, _, data = http("DELETE", f"{self.base}/manifests/{digest}", ok=None)
        if status not in (200, 202):
            log(f"warning: could not delete the old manifest {digest}: HTTP {status} {data[:200]!r}")

    def referrers(self, digest):
        """The referrers index of digest, from the API or the sha256-HEX tag (empty if none)."""
        status, hdrs, data = http("GET", f"{self.base}/referrers/{digest}",
                                  headers={"Accept": OCI_INDEX}, ok=None)
        if status == 200 and hdrs.get("Content-Type", "").startswith(OCI_INDEX):
            self._referrers_api = True
            return json.loads(data)
        if status in (401, 403) or status >= 500:
            raise Fail(f"GET {self.base}/referrers/{digest}: HTTP {status}")
        self._referrers_api = False
        status, _, data = http("GET", f"{self.base}/manifests/{fallback_tag(digest)}",
                               headers={"Accept": OCI_INDEX}, ok=(200, 404))
        if status == 404:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        return json.loads(data)

    def update_fallback(self, subject, drop=(), add=None):
        """Without the referrers API: rewrite subject's sha256-HEX index (cosign's fallback)."""
        if self._referrers_api is None:
            self.referrers(subject)
        if self._referrers_api:
            return
        index = self.referrers(subject)
        index["manifests"] = [d for d in index.get("manifests", []) if d["digest"] not in drop]
        if add is not None:
            index["manifests"].append(add)
        index["manifests"].sort(key=lambda d: d["digest"])
        self.push_manifest(fallback_tag(subject), index, OCI_INDEX)


def fallback_tag(digest):
    return digest.replace(":", "-", 1)


def bundles(reg, digest):
    """[(referrer descriptor, referrer manifest, bundle JSON)] for every Sigstore bundle of digest."""
    found = []
    for desc in reg.referrers(digest).get("manifests", []):
        manifest, _ = reg.manifest(desc["digest"])
        layers = manifest.get("layers") or []
        if len(layers) != 1 or not layers[0].get("mediaType", "").startswith(BUNDLE_PREFIX):
            continue
        found.append((desc, manifest, json.loads(reg.blob(layers[0]["digest"]))))
    if not found:
        raise Fail(f"no Sigstore bundle is attached to {reg.name}@{digest}")
    return found


def replace_bundle(reg, subject, desc, manifest, bundle):
    """Push bundle in place of the one desc/manifest holds; returns the new referrer descriptor."""
    data = json.dumps(bundle, separators=(",", ":")).encode()
    new = copy.deepcopy(manifest)
    new["layers"][0]["digest"] = reg.push_blob(data)
    new["layers"][0]["size"] = len(data)
    added = reg.push_manifest(None, new, manifest.get("mediaType", OCI_MANIFEST))
    for k in ("artifactType", "annotations"):
        if k in desc:
            added[k] = desc[k]
    reg.update_fallback(subject, drop={desc["digest"]}, add=added)
    reg.delete_manifest(desc["digest"])
    log(f"{subject}: bundle manifest {desc['digest']} replaced by {added['digest']}")
    return added


# ---------------------------------------------------------------------------------------------
# Rekor v1 entries


def leaf_hash(data):
    return sha256(b"\x00" + data)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def split_point(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_hash(leaves):
    """RFC 6962 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def inclusion_path(m, leaves):
    """RFC 6962 PATH(m, D[n]), leaf level first (as Rekor and transparency-dev/merkle order it)."""
    if len(leaves) <= 1:
        return []
    k = split_point(len(leaves))
    if m < k:
        return inclusion_path(m, leaves[:k]) + [tree_hash(leaves[k:])]
    return inclusion_path(m - k, leaves[k:]) + [tree_hash(leaves[:k])]


def sign(key, data):
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def pem_of(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def bundle_verifier(bundle, public_key_path):
    """The PEM Rekor puts into the entry as the verifier: the signing certificate, or the key."""
    vm = bundle.get("verificationMaterial", {})
    if "certificate" in vm:
        return pem_of(x509.load_der_x509_certificate(base64.b64decode(vm["certificate"]["rawBytes"])))
    if "x509CertificateChain" in vm:
        first = vm["x509CertificateChain"]["certificates"][0]["rawBytes"]
        return pem_of(x509.load_der_x509_certificate(base64.b64decode(first)))
    if public_key_path:
        return pem_of(read_public_key(public_key_path))
    raise Fail("the bundle holds no certificate (a key-based signature): pass its public key with --public-key")


def entry_body(bundle, verifier_pem):
    """(kind, canonicalized body) as Rekor v1 stores it for this bundle's signature."""
    if "dsseEnvelope" in bundle:
        env = bundle["dsseEnvelope"]
        if len(env.get("signatures", [])) != 1:
            raise Fail("only DSSE envelopes with exactly one signature are supported")
        payload = base64.b64decode(env["payload"])
        sig = base64.b64decode(env["signatures"][0]["sig"])
        # Rekor hashes the envelope as the client sent it; nothing checks it against the bundle.
        envelope_json = json.dumps({"payload": env["payload"], "payloadType": env["payloadType"],
                                    "signatures": [{"keyid": "", "sig": b64(sig)}]},
                                   separators=(",", ":")).encode()
        return "dsse", canonical_json({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope_json).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": b64(sig), "verifier": b64(verifier_pem)}]}})
    if "messageSignature" in bundle:
        ms = bundle["messageSignature"]
        algs = {"SHA2_256": "sha256", "SHA2_384": "sha384", "SHA2_512": "sha512"}
        alg = algs.get(ms["messageDigest"]["algorithm"])
        if alg is None:
            raise Fail(f"unsupported message digest algorithm {ms['messageDigest']['algorithm']}")
        return "hashedrekord", canonical_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": alg,
                              "value": base64.b64decode(ms["messageDigest"]["digest"]).hex()}},
            "signature": {"content": b64(base64.b64decode(ms["signature"])),
                          "publicKey": {"content": b64(verifier_pem)}}}})
    raise Fail("the bundle holds neither a dsseEnvelope nor a messageSignature")


def signed_entry_timestamp(log_key, body, integrated_time, log_index):
    """The SET: Rekor v1's signature over the canonical JSON of body, time, log ID and index."""
    key_id = sha256(spki(log_key.public_key()))
    payload = canonical_json({"body": b64(body), "integratedTime": integrated_time,
                              "logID": key_id.hex(), "logIndex": log_index})
    return sign(log_key, payload)


def hashedrekord_body(digest_hex, signature, verifier_pem):
    """The canonicalized hashedrekord v0.0.1 body of a signature over a sha256 digest."""
    return canonical_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
        "signature": {"content": b64(signature), "publicKey": {"content": b64(verifier_pem)}}}})


def tlog_entry(bundle, log_key, log_index, integrated_time, promise, proof, verifier_pem, log_url):
    kind, body = entry_body(bundle, verifier_pem)
    log_pub = spki(log_key.public_key())
    key_id = sha256(log_pub)
    entry = {
        "logIndex": str(log_index),
        "logId": {"keyId": b64(key_id)},
        "kindVersion": {"kind": kind, "version": "0.0.1"},
        "integratedTime": str(integrated_time),
    }
    if promise:
        entry["inclusionPromise"] = {"signedEntryTimestamp": b64(
            signed_entry_timestamp(log_key, body, integrated_time, log_index))}
    if proof:
        # The entry at index log_index of a tree of log_index + 4 leaves; the others are fillers.
        leaves = [leaf_hash(b"sigstore-testlog filler %d" % i) for i in range(log_index + 4)]
        leaves[log_index] = leaf_hash(body)
        root = tree_hash(leaves)
        host = urllib.parse.urlparse(log_url).hostname or "rekor.test.invalid"
        tree_id = int.from_bytes(key_id[:8], "big") >> 1
        # Rekor v1's checkpoint: a signed note whose origin is "<host> - <tree id>" (sigstore-go
        # takes the " - <digits>" suffix for the mark of a Rekor v1 checkpoint).
        note = f"{host} - {tree_id}\n{len(leaves)}\n{b64(root)}\n"
        sig = key_id[:4] + sign(log_key, note.encode())
        entry["inclusionProof"] = {
            "logIndex": str(log_index),
            "rootHash": b64(root),
            "treeSize": str(len(leaves)),
            "hashes": [b64(h) for h in inclusion_path(log_index, leaves)],
            "checkpoint": {"envelope": f"{note}\n\u2014 {host} {b64(sig)}\n"},
        }
    entry["canonicalizedBody"] = b64(body)
    return entry


SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANN_BUNDLE = "dev.sigstore.cosign/bundle"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def log_key_arg(path):
    key = read_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise Fail(f"{path}: the log key must be an ECDSA P-256 private key")
    return key


def integrated_time_arg(a):
    if a.integrated_time is not None:
        return a.integrated_time
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp()) - 60


def cmd_add_log_entry(a):
    if not 0 <= a.log_index <= MAX_LOG_INDEX:
        raise Fail(f"--log-index must be within 0..{MAX_LOG_INDEX}")
    log_key = log_key_arg(a.log_key)
    when = integrated_time_arg(a)
    reg = Registry(a.registry, a.repo)
    for desc, manifest, bundle in bundles(reg, a.digest):
        verifier = bundle_verifier(bundle, a.public_key)
        entry = tlog_entry(bundle, log_key, a.log_index, when, not a.no_promise, not a.no_proof,
                           verifier, a.log_url)
        bundle.setdefault("verificationMaterial", {})["tlogEntries"] = [entry]
        replace_bundle(reg, a.digest, desc, manifest, bundle)
        print(json.dumps(bundle, separators=(",", ":")))


def cmd_add_legacy_log_entry(a):
    if a.log_index < 0:
        raise Fail("--log-index must not be negative")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", a.digest):
        raise Fail(f"--digest {a.digest}: expected sha256:<64 hex digits>")
    log_key = log_key_arg(a.log_key)
    when = integrated_time_arg(a)
    key_id = sha256(spki(log_key.public_key()))
    reg = Registry(a.registry, a.repo)
    tag = fallback_tag(a.digest) + ".sig"
    status, hdrs, raw = http("GET", f"{reg.base}/manifests/{tag}", ok=(200, 404),
                             headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    if status == 404:
        raise Fail(f"{reg.name}:{tag}: no such tag (is {a.digest} signed in the legacy format?)")
    manifest = json.loads(raw)
    media_type = manifest.get("mediaType") or hdrs.get("Content-Type", "").split(";")[0] or OCI_MANIFEST
    old_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    lines, index = [], a.log_index
    for layer in manifest.get("layers") or []:
        ann = layer.get("annotations") or {}
        if layer.get("mediaType") != SIMPLE_SIGNING or ANN_SIGNATURE not in ann:
            continue
        if ANN_CERTIFICATE in ann:
            verifier = pem_of(x509.load_pem_x509_certificate(ann[ANN_CERTIFICATE].encode()))
        elif a.public_key:
            verifier = pem_of(read_public_key(a.public_key))
        else:
            raise Fail(f"layer {layer['digest']} holds no certificate (a key-based signature): "
                       "pass its public key with --public-key")
        payload = reg.blob(layer["digest"])
        body = hashedrekord_body(hashlib.sha256(payload).hexdigest(),
                                 base64.b64decode(ann[ANN_SIGNATURE]), verifier)
        bundle = {"SignedEntryTimestamp": b64(signed_entry_timestamp(log_key, body, when, index)),
                  "Payload": {"body": b64(body), "integratedTime": when, "logIndex": index,
                              "logID": key_id.hex()}}
        ann[ANN_BUNDLE] = json.dumps(bundle, separators=(",", ":"))
        layer["annotations"] = ann
        lines.append({"layer": layer["digest"], "logIndex": index, "integratedTime": when,
                      "bundle": bundle})
        index += 1
    if not lines:
        raise Fail(f"{reg.name}:{tag} has no simple-signing layer with a signature")
    added = reg.push_manifest(tag, manifest, media_type)
    log(f"{tag}: manifest {old_digest} replaced by {added['digest']} ({len(lines)} layer(s))")
    for line in lines:
        print(json.dumps(line, separators=(",", ":")))


def cmd_copy_bundle(a):
    reg = Registry(a.registry, a.repo)
    subject = reg.descriptor(a.to)
    for desc, manifest, _ in bundles(reg, a.from_):
        new = copy.deepcopy(manifest)
        new["subject"] = subject
        added = reg.push_manifest(None, new, manifest.get("mediaType", OCI_MANIFEST))
        for k in ("artifactType", "annotations"):
            if k in desc:
                added[k] = desc[k]
        reg.update_fallback(a.to, add=added)
        log(f"bundle manifest {desc['digest']} of {a.from_} copied to {added['digest']} for {a.to}")
        print(added["digest"])


def cmd_corrupt_signature(a):
    reg = Registry(a.registry, a.repo)
    for desc, manifest, bundle in bundles(reg, a.digest):
        if "dsseEnvelope" in bundle:
            holder, field = bundle["dsseEnvelope"]["signatures"][0], "sig"
        elif "messageSignature" in bundle:
            holder, field = bundle["messageSignature"], "signature"
        else:
            raise Fail("the bundle holds neither a dsseEnvelope nor a messageSignature")
        sig = bytearray(base64.b64decode(holder[field]))
        sig[-1] ^= 0x01  # the last byte of the ASN.1 signature: still well-formed, no longer valid
        holder[field] = b64(bytes(sig))
        replace_bundle(reg, a.digest, desc, manifest, bundle)
        print(json.dumps(bundle, separators=(",", ":")))


def main():
    p = argparse.ArgumentParser(description="Offline Sigstore test material (see the module doc).")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("ca", help="a Fulcio-like CA and a leaf certificate")
    c.add_argument("--dir", required=True)
    c.add_argument("--subject", required=True, help="the SAN: an email, or a URI")
    c.add_argument("--issuer", required=True, help="the OIDC issuer the leaf names")
    c.add_argument("--validity-hours", type=float, default=4)
    c.add_argument("--reuse-ca", metavar="D0", help="issue the leaf from D0's intermediate")
    c.set_defaults(fn=cmd_ca)

    c = sub.add_parser("log-key", help="an ECDSA P-256 transparency-log key")
    c.add_argument("--out", required=True)
    c.set_defaults(fn=cmd_log_key)

    c = sub.add_parser("trusted-root", help="a Sigstore trusted_root.json")
    c.add_argument("--chain", required=True)
    c.add_argument("--log-key", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--fulcio-url", default=DEFAULT_FULCIO_URL)
    c.add_argument("--log-url", default=DEFAULT_LOG_URL)
    c.add_argument("--valid-from", help="RFC 3339 start of validity (default: the root's notBefore)")
    c.set_defaults(fn=cmd_trusted_root)

    def registry_args(c):
        c.add_argument("--registry", required=True, help="HOST:PORT, plain HTTP")
        c.add_argument("--repo", required=True)

    c = sub.add_parser("add-log-entry", help="add a Rekor v1 entry to the attached bundles")
    registry_args(c)
    c.add_argument("--digest", required=True)
    c.add_argument("--log-key", required=True)
    c.add_argument("--log-index", type=int, default=7)
    c.add_argument("--integrated-time", type=int)
    c.add_argument("--no-promise", action="store_true", help="leave out the inclusion promise (SET)")
    c.add_argument("--no-proof", action="store_true", help="leave out the inclusion proof")
    c.add_argument("--public-key", help="the signer's public key (PEM), for key-based bundles")
    c.add_argument("--log-url", default=DEFAULT_LOG_URL, help="its host names the checkpoint")
    c.set_defaults(fn=cmd_add_log_entry)

    c = sub.add_parser("add-legacy-log-entry",
                       help="add Rekor v1 bundle annotations to a legacy sha256-HEX.sig manifest")
    registry_args(c)
    c.add_argument("--digest", required=True)
    c.add_argument("--log-key", required=True)
    c.add_argument("--log-index", type=int, default=7, help="of the first layer; layer i gets N + i")
    c.add_argument("--integrated-time", type=int)
    c.add_argument("--public-key", help="the signer's public key (PEM), for key-based signatures")
    c.set_defaults(fn=cmd_add_legacy_log_entry)

    c = sub.add_parser("copy-bundle", help="attach A's bundles to B as well")
    registry_args(c)
    c.add_argument("--from", dest="from_", required=True)
    c.add_argument("--to", required=True)
    c.set_defaults(fn=cmd_copy_bundle)

    c = sub.add_parser("corrupt-signature", help="flip a bit of the attached bundles' signature")
    registry_args(c)
    c.add_argument("--digest", required=True)
    c.set_defaults(fn=cmd_corrupt_signature)

    a = p.parse_args()
    try:
        a.fn(a)
    except (Fail, OSError, ValueError, KeyError) as e:
        msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        print(f"sigstore-testlog {a.cmd}: error: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
