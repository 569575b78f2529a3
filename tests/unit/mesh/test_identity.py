"""mesh.identity: SPIFFE ids, the development CA and ensure_certificates' keep/renew rules."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.errors import IdentityError
from mesh.identity import (
    RENEW_BEFORE,
    CertificateAuthority,
    CertStatus,
    IdentityFiles,
    SpiffeId,
    ensure_certificates,
    issue_certificate,
)

DOMAIN, NAMESPACE = "shop.local", "default"
NAMES = ("svc", "admin")


def actions(report: list[CertStatus]) -> dict[str, str]:
    return {status.name: status.action for status in report}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    ensure_certificates(folder, DOMAIN, NAMESPACE, NAMES)
    return folder


# -- SpiffeId ---------------------------------------------------------------------------


def test_spiffe_id_round_trips() -> None:
    spiffe = SpiffeId("shop.local", "default", "inventory")

    parsed = SpiffeId.parse(spiffe.uri)

    assert parsed == spiffe
    assert spiffe.uri == "spiffe://shop.local/ns/default/sa/inventory"
    assert str(spiffe) == spiffe.uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://shop.local/ns/default/sa/inventory",
        "spiffe:/shop.local/ns/default/sa/inventory",
        "shop.local/ns/default/sa/inventory",
        "spiffe://shop.local/sa/inventory",
        "spiffe://shop.local/ns/default",
        "spiffe://shop.local/ns/default/sa",
        "spiffe://shop.local/ns/default/sa/inventory/extra",
        "spiffe://shop.local//ns/default/sa/inventory",
        "spiffe://shop.local/namespace/default/sa/inventory",
        "spiffe://shop.local/ns/default/account/inventory",
        "spiffe:///ns/default/sa/inventory",
        "spiffe://shop.local/ns//sa/inventory",
        "spiffe://shop.local/ns/default/sa/",
        "spiffe://shop.local",
        "",
    ],
)
def test_malformed_spiffe_ids_are_rejected(uri: str) -> None:
    with pytest.raises(IdentityError):
        SpiffeId.parse(uri)


# -- ensure_certificates ---------------------------------------------------------------


def test_first_run_creates_the_ca_and_every_identity(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"

    report = ensure_certificates(folder, DOMAIN, NAMESPACE, NAMES)

    assert actions(report) == {"ca": "created", "svc": "created", "admin": "created"}
    ca = CertificateAuthority.load(folder)
    for name in NAMES:
        files = IdentityFiles(folder, name)
        assert ca.signed(load(files.cert))
        assert files.key.exists()


def test_second_run_keeps_everything(certs: Path) -> None:
    before = {name: load(IdentityFiles(certs, name).cert).serial_number for name in NAMES}

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report) == {"ca": "kept", "svc": "kept", "admin": "kept"}
    after = {name: load(IdentityFiles(certs, name).cert).serial_number for name in NAMES}
    assert after == before


def test_a_new_identity_is_added_and_the_others_kept(certs: Path) -> None:
    report = ensure_certificates(certs, DOMAIN, NAMESPACE, [*NAMES, "order"])

    assert actions(report) == {"ca": "kept", "svc": "kept", "admin": "kept", "order": "created"}


def test_a_deleted_leaf_is_created_again(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    files.cert.unlink()
    files.key.unlink()

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "created"
    assert actions(report)["admin"] == "kept"
    assert CertificateAuthority.load(certs).signed(load(files.cert))


@pytest.mark.parametrize("part", ["cert", "key"])
def test_a_corrupted_leaf_is_issued_again(certs: Path, part: str) -> None:
    files = IdentityFiles(certs, "svc")
    old_serial = load(files.cert).serial_number
    getattr(files, part).write_bytes(b"-----BEGIN GARBAGE-----\n")

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] in ("created", "renewed")
    assert actions(report)["admin"] == "kept"
    assert load(files.cert).serial_number != old_serial


def test_a_leaf_of_another_ca_is_renewed(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    stranger_ca = CertificateAuthority.create()
    cert, key = issue_certificate(stranger_ca, SpiffeId(DOMAIN, NAMESPACE, "svc"))
    files.cert.write_bytes(cert)
    files.key.write_bytes(key)

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "renewed"
    assert CertificateAuthority.load(certs).signed(load(files.cert))


def test_a_leaf_for_another_identity_is_renewed(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    ca = CertificateAuthority.load(certs)
    cert, key = issue_certificate(ca, SpiffeId(DOMAIN, "other-namespace", "svc"))
    files.cert.write_bytes(cert)
    files.key.write_bytes(key)

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "renewed"


def test_a_leaf_without_the_service_dns_name_is_renewed(certs: Path) -> None:
    """Certificates issued before they carried <name>.<namespace>.<trust domain>."""
    files = IdentityFiles(certs, "svc")
    ca = CertificateAuthority.load(certs)
    current = load(files.cert)
    only_uri = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(SpiffeId(DOMAIN, NAMESPACE, "svc").uri)]
    )
    builder = x509.CertificateBuilder(
        subject_name=current.subject,
        issuer_name=current.issuer,
        public_key=current.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=current.not_valid_before_utc,
        not_valid_after=current.not_valid_after_utc,
        extensions=[
            x509.Extension(only_uri.oid, False, only_uri),
            *(e for e in current.extensions if e.oid != only_uri.oid),
        ],
    )
    old = builder.sign(ca.key, hashes.SHA256())
    files.cert.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    assert actions(ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES))["svc"] == "renewed"

    sans = load(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "svc.default.shop.local" in sans.value.get_values_for_type(x509.DNSName)


def test_a_leaf_expiring_within_renew_before_is_renewed(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    ca = CertificateAuthority.load(certs)
    soon = now() + RENEW_BEFORE - dt.timedelta(days=1)
    cert, key = issue_certificate(ca, SpiffeId(DOMAIN, NAMESPACE, "svc"), not_after=soon)
    files.cert.write_bytes(cert)
    files.key.write_bytes(key)

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "renewed"
    assert load(files.cert).not_valid_after_utc - now() > RENEW_BEFORE


def test_a_leaf_expiring_after_renew_before_is_kept(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    ca = CertificateAuthority.load(certs)
    later = now() + RENEW_BEFORE + dt.timedelta(days=2)
    cert, key = issue_certificate(ca, SpiffeId(DOMAIN, NAMESPACE, "svc"), not_after=later)
    files.cert.write_bytes(cert)
    files.key.write_bytes(key)

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "kept"


def test_a_ca_expiring_soon_is_replaced_and_every_leaf_reissued(certs: Path) -> None:
    old = CertificateAuthority.create(now=now() - dt.timedelta(days=3650 - 10))
    old.save(certs)

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report) == {"ca": "created", "svc": "renewed", "admin": "renewed"}
    ca = CertificateAuthority.load(certs)
    assert ca.cert.serial_number != old.cert.serial_number
    assert all(ca.signed(load(IdentityFiles(certs, name).cert)) for name in NAMES)


def test_a_key_that_does_not_match_its_cert_is_renewed(certs: Path) -> None:
    svc, admin = IdentityFiles(certs, "svc"), IdentityFiles(certs, "admin")
    svc.key.write_bytes(admin.key.read_bytes())

    report = ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert actions(report)["svc"] == "renewed"


def test_private_keys_are_readable_by_the_owner_only(certs: Path) -> None:
    keys = [certs / "ca.key", *(IdentityFiles(certs, name).key for name in NAMES)]

    modes = {key.name: stat.S_IMODE(key.stat().st_mode) for key in keys}

    assert modes == {key.name: 0o600 for key in keys}


def test_a_renewed_key_is_still_owner_only(certs: Path) -> None:
    files = IdentityFiles(certs, "svc")
    files.key.write_bytes(b"garbage")
    files.key.chmod(0o644)

    ensure_certificates(certs, DOMAIN, NAMESPACE, NAMES)

    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


# -- what an issued certificate carries ----------------------------------------------


def test_issued_certificates_carry_spiffe_service_and_loopback_sans(certs: Path) -> None:
    cert = load(IdentityFiles(certs, "svc").cert)

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        SpiffeId(DOMAIN, NAMESPACE, "svc").uri
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["svc.default.shop.local", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def test_issued_certificates_serve_both_ends_of_mtls(certs: Path) -> None:
    cert = load(IdentityFiles(certs, "svc").cert)

    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value

    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    assert basic.ca is False


def test_issue_certificate_can_make_an_expired_certificate() -> None:
    ca = CertificateAuthority.create()
    issued = now()

    cert_pem, _ = issue_certificate(
        ca,
        SpiffeId(DOMAIN, NAMESPACE, "admin"),
        not_before=issued - dt.timedelta(days=2),
        not_after=issued - dt.timedelta(days=1),
    )

    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_after_utc < issued
    assert ca.signed(cert)


def test_issue_certificate_with_only_a_past_not_after_is_expired() -> None:
    ca = CertificateAuthority.create()
    issued = now()

    cert_pem, _ = issue_certificate(
        ca, SpiffeId(DOMAIN, NAMESPACE, "admin"), not_after=issued - dt.timedelta(days=1)
    )

    assert x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc < issued


def test_ca_signed_rejects_a_certificate_of_another_ca() -> None:
    ours, theirs = CertificateAuthority.create(), CertificateAuthority.create()
    cert_pem, _ = issue_certificate(theirs, SpiffeId(DOMAIN, NAMESPACE, "svc"))

    cert = x509.load_pem_x509_certificate(cert_pem)

    assert theirs.signed(cert)
    assert not ours.signed(cert)


def test_loading_a_missing_ca_raises_identity_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        CertificateAuthority.load(tmp_path)
