"""A private certificate authority for C2PA tests, made fresh in the test session.

The end-entity certificate has what the C2PA certificate profile (spec 2.2, 14.5.1) and
the SDK's check ask of a signer: v3, an ECDSA P-256 (or RSA 2048) key, Key Usage
digitalSignature (critical), an Extended Key Usage the SDK accepts by default
(emailProtection), cA false, an Authority Key Identifier, and a chain to a root.
"""

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Kind = Literal["chained", "self_signed_ee", "self_signed_ca", "no_eku"]
ORGANIZATION = "imagegate tests"
SIGNER = "imagegate test signer"


@dataclass(frozen=True)
class Credentials:
    chain: Path
    """End-entity certificate, then the root (PEM)."""
    key: Path
    """The end-entity private key, PKCS#8 PEM, mode 0600."""
    root: Path
    """The trust anchor to validate with (PEM)."""


def make_credentials(
    folder: Path, *, kind: Kind = "chained", algorithm: Literal["es256", "ps256"] = "es256"
) -> Credentials:
    """`chained`: a root and an end-entity certificate it issued. `self_signed_ee`: an
    end-entity certificate with the right extensions that signs itself. `self_signed_ca`:
    a self-signed certificate with cA true, as `openssl req -x509` makes by default.
    `no_eku`: a chained end-entity certificate without Extended Key Usage."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root_key = _key(algorithm)
    root_name = _name("imagegate test root")
    root = (
        _builder(root_name, root_name, root_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(signature=False, cert_sign=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = _key(algorithm)
    leaf_name = _name(SIGNER)
    self_signed = kind in ("self_signed_ee", "self_signed_ca")
    issuer_name, issuer_key = (leaf_name, leaf_key) if self_signed else (root_name, root_key)
    builder = _builder(leaf_name, issuer_name, leaf_key, now).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
        critical=False,
    )
    is_ca = kind == "self_signed_ca"
    builder = builder.add_extension(
        x509.BasicConstraints(ca=is_ca, path_length=None), critical=True
    ).add_extension(key_usage(signature=True, cert_sign=is_ca), critical=True)
    if kind != "no_eku":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    leaf = builder.sign(issuer_key, hashes.SHA256())

    credentials = Credentials(folder / "chain.pem", folder / "key.pem", folder / "root.pem")
    credentials.chain.write_bytes(_pem(leaf) + (b"" if self_signed else _pem(root)))
    credentials.root.write_bytes(_pem(root))
    fd = os.open(credentials.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return credentials


def _key(algorithm: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if algorithm == "ps256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def key_usage(*, signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)
