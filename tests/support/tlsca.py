"""A throwaway certificate authority for tests and the lab, made with `cryptography`: a root, an
intermediate, and leaf certificates for server names, written as PEM files the way servers take
them (the leaf then the intermediate in one chain file, the key beside it; clients trust the root).

    ca = TestCA(tmp_path)
    chain, key = ca.issue("ams-1.oca.test", "127.0.0.1")
    curl --cacert {ca.root_path} https://ams-1.oca.test:PORT/...
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "opencdn test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._sign(_name(name), self.root_key.public_key(), _name(name), self.root_key,
                               now - dt.timedelta(days=1), now + dt.timedelta(days=3650), ca=True)
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = self._sign(_name(name + " intermediate"), self.inter_key.public_key(), _name(name),
                                self.root_key, now - dt.timedelta(days=1), now + dt.timedelta(days=3650), ca=True)
        self.root_path = self.dir / "ca.pem"
        self.root_path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _sign(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, not_before: dt.datetime,
              not_after: dt.datetime, ca: bool = False, names: tuple[str, ...] = ()) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(not_before)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
        else:
            sans: list[x509.GeneralName] = []
            for n in names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def issue(self, *names: str, days: float = 90, stem: str | None = None,
              rsa: bool = False) -> tuple[Path, Path]:
        """A leaf for `names` (DNS names or IP addresses) valid `days` from now: (chain file, key file)."""
        now = dt.datetime.now(dt.timezone.utc)
        if rsa:
            from cryptography.hazmat.primitives.asymmetric import rsa as rsa_mod

            key = rsa_mod.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        leaf = self._sign(_name(names[0]), key.public_key(), self.inter.subject, self.inter_key,
                          now - dt.timedelta(minutes=5), now + dt.timedelta(days=days), names=names)
        stem = stem or names[0].replace("*", "wildcard")
        chain, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + self.inter.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return chain, key_path
