"""Certificates generated in the test: a CA, a server and a client cert, and an outsider.

RSA keys (DCMTK's default BCP 195 TLS profile negotiates ECDHE-RSA suites), PEM
files without passwords, valid for a day. The server certificate names
127.0.0.1 and localhost.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path          # the CA certificate both sides trust
    server: Pair      # signed by ca, for 127.0.0.1 / localhost
    client: Pair      # signed by ca, CN=CONSOLE
    outsider: Pair    # a client cert from another CA
    outsider_ca: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> Pair:
    pair = Pair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    pair.key.chmod(0o600)  # bridge.tls refuses a key other users may read
    return pair


def _builder(subject: str, issuer: x509.Name, public: object, days: int = 365
             ) -> x509.CertificateBuilder:
    # A year: bridge.tls warns about a certificate within 30 days of its expiry.
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject)).issuer_name(issuer)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _ca(folder: Path, stem: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate, Path]:
    key = _key()
    cert = (_builder(stem, _name(stem), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = _write(folder, stem, key, cert).cert
    return key, cert, path


def _leaf(folder: Path, stem: str, cn: str, ca_key: rsa.RSAPrivateKey,
          ca_cert: x509.Certificate, *, server: bool) -> Pair:
    key = _key()
    builder = (_builder(cn, ca_cert.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return _write(folder, stem, key, builder.sign(ca_key, hashes.SHA256()))


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, ca_path = _ca(folder, "test-ca")
    other_key, other_cert, other_path = _ca(folder, "other-ca")
    return Pki(
        ca=ca_path,
        server=_leaf(folder, "server", "mwl-bridge", ca_key, ca_cert, server=True),
        client=_leaf(folder, "client", "CONSOLE", ca_key, ca_cert, server=False),
        outsider=_leaf(folder, "outsider", "INTRUDER", other_key, other_cert, server=False),
        outsider_ca=other_path,
    )
