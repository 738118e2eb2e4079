#!/usr/bin/env python3
"""A test PKI for Notary Project signatures (what `notation sign` accepts), offline.

    hack/notation-pki DIR [--organization ORG]

writes into DIR: root.crt (the trust store's certificate), leaf-key.pem (PKCS#8) and
leaf-chain.crt (leaf, intermediate, root: the certPath notation signs with), for the subject
`C=US, ST=WA, L=Seattle, O=<ORG>, CN=driftless.test signer`; and other-root.crt, an unrelated root
(the wrong CA). ECDSA P-256 throughout. The extensions are the ones notation requires: critical
key usages (keyCertSign for the CAs, digitalSignature only for the leaf), CA basic constraints,
the code-signing extended key usage on the leaf. Needs `cryptography` (hack/platform makes sure
of it).
"""
import argparse
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(org, cn):
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def usage(sign=False, ca=False):
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def issue(subject, key, issuer_name, issuer_key, days, extensions, issuer_public=None):
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_public is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public),
                            critical=False)
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key, hashes.SHA256())


def root(org, cn):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(org, cn)
    cert = issue(subject, key, subject, key, 3650, [
        (x509.BasicConstraints(ca=True, path_length=None), True), (usage(ca=True), True)])
    return cert, key


def pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--organization", default="Driftless Test")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    root_cert, root_key = root(a.organization, "Driftless Test Root CA")
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = issue(name(a.organization, "Driftless Test Intermediate CA"), inter_key,
                  root_cert.subject, root_key, 1825, [
                      (x509.BasicConstraints(ca=True, path_length=0), True),
                      (usage(ca=True), True)], root_cert.public_key())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(name(a.organization, "driftless.test signer"), leaf_key, inter.subject, inter_key,
                 365, [(x509.BasicConstraints(ca=False, path_length=None), True),
                       (usage(sign=True), True),
                       (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)],
                 inter.public_key())
    other, _ = root("Other Test", "Other Test Root CA")
    files = {
        "root.crt": pem(root_cert),
        "leaf-chain.crt": pem(leaf, inter, root_cert),
        "other-root.crt": pem(other),
        "leaf-key.pem": leaf_key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()),
    }
    for file, data in files.items():
        with open(os.path.join(a.dir, file), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
