"""Throwaway certificates for the TLS tests, made at test time with ``cryptography``.

pki = make_pki(tmp_path)     # a CA, an edge certificate signed by it, a device certificate signed by it,
                             # and a device certificate signed by another CA; all as PEM files
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the edge's certificate carries: what clients on this machine dial, and one for tls_server_name.
EDGE_IP = "127.0.0.1"
EDGE_DNS = ("localhost", "edge.test")


@dataclass(frozen=True)
class KeyPair:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (unencrypted)


@dataclass(frozen=True)
class Pki:
    ca: Path  # the deployment's CA certificate: signs the edge's and the device's certificates
    edge: KeyPair  # server certificate for EDGE_IP and EDGE_DNS
    device: KeyPair  # client certificate signed by ca
    rogue_ca: Path  # another CA
    rogue_device: KeyPair  # client certificate signed by rogue_ca


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    pair = KeyPair(folder / f"{stem}.pem", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pair


class _Ca:
    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        self.cert = (
            _builder(common_name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, folder: Path, stem: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName] | None = None
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(stem, self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(folder, stem, builder.sign(self.key, hashes.SHA256()), key)


def make_pki(folder: Path) -> Pki:
    ca, rogue = _Ca("sbn test CA"), _Ca("someone else's CA")
    (folder / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    (folder / "rogue-ca.pem").write_bytes(rogue.cert.public_bytes(serialization.Encoding.PEM))
    edge_names = [x509.IPAddress(ipaddress.ip_address(EDGE_IP)), *(x509.DNSName(name) for name in EDGE_DNS)]
    return Pki(
        ca=folder / "ca.pem",
        edge=ca.issue(folder, "edge", ExtendedKeyUsageOID.SERVER_AUTH, edge_names),
        device=ca.issue(folder, "device", ExtendedKeyUsageOID.CLIENT_AUTH),
        rogue_ca=folder / "rogue-ca.pem",
        rogue_device=rogue.issue(folder, "rogue-device", ExtendedKeyUsageOID.CLIENT_AUTH),
    )
