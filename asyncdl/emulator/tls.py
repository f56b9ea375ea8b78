"""Certificates for the emulator's https: a fresh CA and a server certificate it signed.

Made with trustme, an optional dependency (the ``emulator-tls`` extra): only serving https needs
it. Clients trust the emulator by being given the CA's PEM (``--ca-bundle`` or ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import UsageError

#: The names the emulator's certificate is valid for by default: where it listens.
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certificates:
    """PEM of a CA and of a server certificate it signed (private key, then the chain)."""

    ca_pem: bytes
    server_pem: bytes = field(repr=False)

    def server_context(self, directory: Path) -> ssl.SSLContext:
        """A server context for this certificate (its PEM is written to ``directory`` to load)."""
        path = directory / "server.pem"
        path.write_bytes(self.server_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(path)
        return context


def make_certificates(
    names: Sequence[str] = LOOPBACK_NAMES, *, expired: bool = False
) -> Certificates:
    """A new CA and a certificate for ``names`` (host names or IP addresses) signed by it.

    ``expired`` makes a certificate whose validity ended in 2001, to test that clients refuse it.
    """
    try:
        import trustme
    except ImportError as exc:
        raise UsageError(
            "serving https needs trustme: pip install 'asyncdl[emulator-tls]'"
        ) from exc
    ca = trustme.CA(organization_name="asyncdl emulator")
    if expired:
        leaf = ca.issue_cert(
            *names,
            not_before=datetime(2000, 1, 1, tzinfo=UTC),
            not_after=datetime(2001, 1, 1, tzinfo=UTC),
        )
    else:
        leaf = ca.issue_cert(*names)
    return Certificates(ca.cert_pem.bytes(), leaf.private_key_and_cert_chain_pem.bytes())
