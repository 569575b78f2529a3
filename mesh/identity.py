"""Identities: SPIFFE ids, a development CA, one certificate per identity, TLS credentials.

Every workload certificate carries `URI:spiffe://<trust domain>/ns/<namespace>/sa/<name>`
(what servers authorise callers on), `DNS:<name>.<namespace>.<trust domain>` (what the
mesh client verifies servers on: an instance registered as "product" must hold the
product certificate), and DNS/IP SANs for loopback, so grpcurl and other clients can
verify the server by address as usual.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.errors import IdentityError

__all__ = [
    "CertStatus",
    "CertificateAuthority",
    "IdentityFiles",
    "SpiffeId",
    "channel_credentials",
    "ensure_certificates",
    "forwarded_uris",
    "issue_certificate",
    "server_credentials",
]

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)
_LOOPBACK_DNS = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class SpiffeId:
    """spiffe://<trust_domain>/ns/<namespace>/sa/<name>"""

    trust_domain: str
    namespace: str
    name: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.name}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        scheme, _, rest = uri.partition("://")
        domain, _, path = rest.partition("/")
        parts = path.split("/")
        if scheme != "spiffe" or not domain or len(parts) != 4 or parts[0::2] != ["ns", "sa"]:
            raise IdentityError(f"not a workload SPIFFE id: {uri!r}")
        if not parts[1] or not parts[3]:
            raise IdentityError(f"empty namespace or name in {uri!r}")
        return cls(trust_domain=domain, namespace=parts[1], name=parts[3])

    @property
    def dns_name(self) -> str:
        """<name>.<namespace>.<trust domain>: the name a client checks a server's
        certificate for (Python gRPC has no hook to check the URI SAN itself)."""
        return f"{self.name}.{self.namespace}.{self.trust_domain}"

    def __str__(self) -> str:
        return self.uri


def forwarded_uris(xfcc: str) -> tuple[str, ...]:
    """The URI SANs of the client certificate that Envoy's x-forwarded-client-cert
    header describes (`By=...;Hash=...;URI=spiffe://...`). Only a header with one
    element counts: a sidecar that sanitises sets exactly one."""
    if "," in xfcc.replace("\\,", ""):
        return ()
    uris = []
    for pair in xfcc.split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "uri":
            uris.append(value.strip().strip('"'))
    return tuple(uris)


@dataclass(frozen=True)
class IdentityFiles:
    """Where one identity's PEM files live: <dir>/<name>.crt and <dir>/<name>.key."""

    certs_dir: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.certs_dir / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        return self.certs_dir / f"{self.name}.key"

    @property
    def ca(self) -> Path:
        return self.certs_dir / "ca.crt"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A self-signed CA that signs workload certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(
        cls, common_name: str = "ShopMesh development CA", *, now: dt.datetime | None = None
    ) -> CertificateAuthority:
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
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
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, certs_dir: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate((certs_dir / "ca.crt").read_bytes())
            key = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), None)
        except (OSError, ValueError) as error:
            raise IdentityError(f"cannot load the CA from {certs_dir}: {error}") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{certs_dir / 'ca.key'} is not an EC key")
        return cls(cert, key)

    def save(self, certs_dir: Path) -> None:
        _write_private(certs_dir / "ca.key", _key_pem(self.key))
        (certs_dir / "ca.crt").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def signed(self, cert: x509.Certificate) -> bool:
        """Whether `cert` was issued by this CA (signature and issuer name)."""
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def issue_certificate(
    ca: CertificateAuthority,
    spiffe: SpiffeId,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    dns_names: Sequence[str] = _LOOPBACK_DNS,
    ip_addresses: Sequence[str] = _LOOPBACK_IPS,
) -> tuple[bytes, bytes]:
    """A workload certificate and its key, both PEM. Used for clients and servers alike."""
    now = _now()
    not_after = not_after or now + LEAF_LIFETIME
    # A little in the past, for clock skew; earlier still for a deliberately expired cert.
    not_before = not_before or min(now - dt.timedelta(minutes=5), not_after - dt.timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe.uri),
        x509.DNSName(spiffe.dns_name),
    ]
    sans += [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe.name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_agreement=True,
                content_commitment=False,
                data_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


@dataclass(frozen=True)
class CertStatus:
    """What ensure_certificates did for one file: "created", "renewed" or "kept"."""

    name: str
    action: str
    not_after: dt.datetime


def _reusable(
    ca: CertificateAuthority, files: IdentityFiles, spiffe: SpiffeId, now: dt.datetime
) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        return None  # a crash between writing the new key and the new cert
    if spiffe.uri not in sans.get_values_for_type(x509.UniformResourceIdentifier):
        return None
    if spiffe.dns_name not in sans.get_values_for_type(x509.DNSName):
        return None  # issued before certificates carried it
    if not ca.signed(cert) or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    return cert


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ensure_certificates(
    certs_dir: Path, trust_domain: str, namespace: str, names: Iterable[str]
) -> list[CertStatus]:
    """Create the CA and a certificate per identity, keeping every one still valid.

    A new CA (none was there, or it expires soon) re-issues every certificate.
    """
    now = _now()
    certs_dir.mkdir(parents=True, exist_ok=True)
    report: list[CertStatus] = []
    ca: CertificateAuthority | None = None
    if (certs_dir / "ca.crt").exists():
        ca = CertificateAuthority.load(certs_dir)
        if ca.cert.not_valid_after_utc - now < RENEW_BEFORE:
            ca = None
    if ca is None:
        ca = CertificateAuthority.create(now=now)
        ca.save(certs_dir)
        report.append(CertStatus("ca", "created", ca.cert.not_valid_after_utc))
    else:
        report.append(CertStatus("ca", "kept", ca.cert.not_valid_after_utc))
    for name in names:
        files = IdentityFiles(certs_dir, name)
        spiffe = SpiffeId(trust_domain, namespace, name)
        kept = _reusable(ca, files, spiffe, now)
        if kept is not None:
            report.append(CertStatus(name, "kept", kept.not_valid_after_utc))
            continue
        action = "renewed" if files.cert.exists() else "created"
        cert_pem, key_pem = issue_certificate(ca, spiffe)
        _write_private(files.key, key_pem)
        files.cert.write_bytes(cert_pem)
        not_after = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
        report.append(CertStatus(name, action, not_after))
    return report


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read {path}: {error.strerror}; run `meshctl certs`") from error


def server_credentials(files: IdentityFiles) -> grpc.ServerCredentials:
    """TLS that requires a client certificate chaining to the mesh CA."""
    return grpc.ssl_server_credentials(
        [(_read(files.key), _read(files.cert))],
        root_certificates=_read(files.ca),
        require_client_auth=True,
    )


def channel_credentials(files: IdentityFiles) -> grpc.ChannelCredentials:
    """TLS that presents this identity's certificate and trusts only the mesh CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca),
        private_key=_read(files.key),
        certificate_chain=_read(files.cert),
    )
