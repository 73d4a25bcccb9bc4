#!/usr/bin/env python
"""Throwaway secrets for a local or test deployment: a CA, server/client certificates, tokens
and a Redis password. Development only: the CA key is not kept, nothing here is for production.

    python scripts/dev_secrets.py deploy/secrets            # what docker-compose.yml mounts
    python scripts/dev_secrets.py OUT --host myhost --force  # extra SAN, replace existing files

Writes, each mode 0600 in a 0700 folder:

- ``ca.crt``: the CA that signed both certificates (clients: ``ACTIVEKD_CLIENT_CA_FILE``);
- ``server.crt`` / ``server.key``: SANs for every ``--host`` (DNS names and IP addresses);
- ``client.crt`` / ``client.key``: a client certificate for mTLS;
- ``tokens``: ``role:token:name`` lines (``ACTIVEKD_AUTH_TOKENS_FILE``): admin, writer, reader,
  ``experiment`` (role writer: the experiment service's own token) and ``annotation`` (role
  writer: the Label Studio backend's own token);
- ``experiment.token``, ``annotation.token``, ``admin.token``, ``writer.token``,
  ``reader.token``: one token each (``ACTIVEKD_CLIENT_TOKEN_FILE``);
- ``redis.password`` (``ACTIVEKD_REDIS_PASSWORD_FILE``, and redis-server ``--requirepass``);
- ``annotation.secret``: the secret Label Studio and the annotation backend share
  (``ACTIVEKD_ANNOTATION_SECRET_FILE``, docs/annotation.md);
- ``label-studio.api-key``: written **empty**, for the Label Studio API key you create in Label
  Studio (``LABEL_STUDIO_API_KEY_FILE``); an existing one is kept, even with ``--force``.

Needs the ``cryptography`` package (a dev dependency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("selection", "teacher", "trainer", "experiment", "localhost", "127.0.0.1")
#: role of each token in ``tokens`` (the experiment service calls the others as a writer; the
#: annotation backend calls the experiment service as a writer: Get, Advance, SubmitLabels)
TOKEN_ROLES = {
    "admin": "admin",
    "writer": "writer",
    "reader": "reader",
    "experiment": "writer",
    "annotation": "writer",
}
#: files the user fills in (a key made by other software): written empty when missing, never
#: replaced
USER_FILES = ("label-studio.api-key",)
FILES = (
    "ca.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
    "tokens",
    *(f"{name}.token" for name in TOKEN_ROLES),
    "redis.password",
    "annotation.secret",
    *USER_FILES,
)
_VALID_DAYS = 30


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "activekd dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: x509.SubjectAlternativeName | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def write_dev_secrets(
    out: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write the files of the module docstring into ``out``; returns ``{file name: path}``.

    Raises ``FileExistsError`` when ``out`` already holds any of them (``USER_FILES`` aside) and
    ``overwrite`` is false.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    existing = [name for name in FILES if name not in USER_FILES and (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already has {', '.join(existing)} (pass overwrite=True)")

    ca_key, server_key, client_key = _key(), _key(), _key()
    ca_name = _name("activekd dev CA")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server = _cert(
        _name(hosts[0] if hosts else "localhost"),
        server_key,
        ca_name,
        ca_key,
        san=_san(hosts),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client = _cert(
        _name("activekd dev client"),
        client_key,
        ca_name,
        ca_key,
        san=x509.SubjectAlternativeName([x509.DNSName("activekd-dev-client")]),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    tokens = {name: secrets.token_urlsafe(32) for name in TOKEN_ROLES}
    token_lines = "".join(f"{TOKEN_ROLES[n]}:{t}:{n}\n" for n, t in tokens.items())
    contents: dict[str, bytes] = {
        "ca.crt": _pem(ca),
        "server.crt": _pem(server),
        "server.key": _key_pem(server_key),
        "client.crt": _pem(client),
        "client.key": _key_pem(client_key),
        "tokens": (
            "# activekd dev tokens (role:token:name), written by scripts/dev_secrets.py\n"
            + token_lines
        ).encode(),
        **{f"{n}.token": f"{t}\n".encode() for n, t in tokens.items()},
        "redis.password": f"{secrets.token_urlsafe(24)}\n".encode(),
        "annotation.secret": f"{secrets.token_urlsafe(32)}\n".encode(),
    }
    paths = {}
    for name in FILES:
        if name in USER_FILES:
            if not (out / name).exists():
                _write(out / name, b"")
        else:
            _write(out / name, contents[name])
        paths[name] = out / name
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dev_secrets.py",
        description="Write throwaway dev/test secrets (CA, certificates, tokens, Redis password).",
    )
    parser.add_argument("out", type=Path, help="folder to write into (created, mode 0700)")
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help=f"server certificate SAN (repeatable; default: {', '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        paths = write_dev_secrets(
            args.out, tuple(args.hosts or DEFAULT_HOSTS), overwrite=args.force
        )
    except FileExistsError as exc:
        print(f"dev_secrets: {exc}; pass --force to replace them", file=sys.stderr)
        return 1
    print(f"dev_secrets: wrote {len(paths)} files to {args.out} (development only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
