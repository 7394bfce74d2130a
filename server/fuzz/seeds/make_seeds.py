#!/usr/bin/env python3
"""Writes the seed inputs of the server fuzz targets (python3 with `cryptography`).

Real documents of the shapes the tests make: SPIFFE JWK Sets with CA certificates and JWT
keys (P-256 and RSA), and OpenBao sign-intermediate answers (a root and an intermediate).
Each seed starts with the target's mode byte (see the target's doc comment). Run from this
directory; the keys are fresh each time, so the files change on every run.
"""
import base64
import datetime
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def b64u(n, size):
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def ca(key, cn, uri=None, issuer=None, issuer_key=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2027, 1, 1)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * 5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    )
    if uri:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return b.sign(issuer_key or key, hashes.SHA256())


def jwk(key, use, cert=None, kid=None):
    pub = key.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = pub.public_numbers()
        out = {"kty": "EC", "crv": "P-256", "x": b64u(n.x, 32), "y": b64u(n.y, 32)}
    else:
        n = pub.public_numbers()
        out = {"kty": "RSA", "n": b64u(n.n, 256), "e": b64u(n.e, 3)}
    out["use"] = use
    if cert is not None:
        out["x5c"] = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    if kid:
        out["kid"] = kid
    return out


def write(target, name, data):
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)


ec_key = ec.generate_private_key(ec.SECP256R1())
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwt_key = ec.generate_private_key(ec.SECP256R1())
ec_root = ca(ec_key, "td-b root", "spiffe://td-b.test")
rsa_root = ca(rsa_key, "upstream root")

ironroot = {
    "keys": [jwk(ec_key, "x509-svid", ec_root), jwk(jwt_key, "jwt-svid", kid="k1")],
    "spiffe_sequence": 3,
    "spiffe_refresh_hint": 300,
}
# SPIRE leaves spiffe_sequence out while it is 0, and ignores keys of unknown use.
spire = {
    "keys": [
        jwk(rsa_key, "x509-svid", rsa_root),
        jwk(jwt_key, "jwt-svid", kid="k1"),
        {"kty": "oct", "use": "enc", "k": "AAAA"},
    ],
}
for name, doc in [("ironroot", ironroot), ("spire", spire)]:
    text = json.dumps(doc).encode()
    write("jwks_bundle", name, b"\x00" + text)
    # federation_judge: body as is; https_spiffe; stored bundle at sequence 2 / 0.
    write("federation_judge", name, bytes([0x23]) + text)
    write("federation_judge", name + "-web", bytes([0x00]) + text)

mid_key = ec.generate_private_key(ec.SECP256R1())
mid = ca(mid_key, "ironroot CA example.org", "spiffe://example.org", rsa_root.subject, rsa_key)
pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
answer = {"certificate": pem(mid), "issuing_ca": pem(rsa_root), "ca_chain": [pem(rsa_root)]}
write("upstream_intermediate", "openbao-answer", b"\x00" + json.dumps(answer).encode())
answer = {"certificate": pem(mid), "issuing_ca": pem(rsa_root)}
write("upstream_intermediate", "openbao-issuing-ca", b"\x00" + json.dumps(answer).encode())
