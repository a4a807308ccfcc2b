"""Enveloped XML-DSig signatures (CAP 1.2 §3.3.2.1), made and checked with ``signxml``.

The signature is the last child of the document's root (``ds:Signature``, where the CAP 1.2
schema allows it), covers the whole document (reference URI ""), uses exclusive
canonicalisation, RSA or ECDSA with SHA-256, and carries the signer's certificate. A receiver
checks it against the certificate it was configured with, never against the one the document
brings. The sender (``alerts``) and the simulated broadcast receiver share these functions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from gridwatch.errors import ConfigError, GridwatchError

EXCLUSIVE_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
# The signature sits directly under the root and signs the whole document, nothing else.
_EXPECT = SignatureConfiguration(location="./", expect_references=1)


class SignatureError(GridwatchError):
    """A document whose enveloped signature is missing, malformed or does not verify."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass(frozen=True)
class XmlSigner:
    key: SigningKey
    certificate: x509.Certificate

    def sign(self, document: bytes) -> bytes:
        """``document`` with an enveloped signature appended to its root."""
        root = etree.fromstring(document, _parser())
        method = (
            SignatureMethod.ECDSA_SHA256
            if isinstance(self.key, ec.EllipticCurvePrivateKey)
            else SignatureMethod.RSA_SHA256
        )
        signer = XMLSigner(signature_algorithm=method, c14n_algorithm=EXCLUSIVE_C14N)
        signed = signer.sign(root, key=self.key, cert=[self.certificate])
        out: bytes = etree.tostring(signed, xml_declaration=True, encoding="utf-8")
        return out


def verify(document: bytes, certificate: x509.Certificate) -> None:
    """Raise ``SignatureError`` unless ``document`` is signed by ``certificate``'s key."""
    try:
        XMLVerifier().verify(
            document, x509_cert=certificate, parser=_parser(), expect_config=_EXPECT
        )
    except InvalidSignature as err:
        raise SignatureError(
            f"XML signature does not verify against the certificate: {err}"
        ) from err
    except (InvalidInput, etree.XMLSyntaxError) as err:
        raise SignatureError(f"XML signature missing or malformed: {err}") from err


def load_signer(key_path: Path, certificate_path: Path) -> XmlSigner:
    """The PEM private key and certificate, checked to belong together."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError(f"signing key {key_path}: {err}") from err
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"signing key {key_path}: use an RSA or EC key")
    certificate = load_certificate(certificate_path)
    if _public(certificate.public_key()) != _public(key.public_key()):
        raise ConfigError(f"certificate {certificate_path} is not the certificate of {key_path}")
    return XmlSigner(key, certificate)


def _public(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"certificate {path}: {err}") from err


def make_throwaway(
    directory: Path, common_name: str, days: int = 7, ip_addresses: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A new EC P-256 key and a self-signed certificate for it (for a demo or a test stack);
    with ``ip_addresses`` the certificate also serves TLS on those addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
    )
    if ip_addresses:
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    key_path, certificate_path = directory / "signing-key.pem", directory / "signing-cert.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, certificate_path
