"""Frame I/O over asyncio streams (the only place that reads the wire) and the TLS contexts."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tmrl.errors import AuthError, ConfigError
from tmrl.net.protocol import PREFIX_SIZE, frame_prefix, pack, parse_prefix, split_frame


async def read_frame(reader: asyncio.StreamReader, max_frame_bytes: int) -> tuple[dict[str, Any], memoryview]:
    """Read one frame: the size is checked on the 6-byte prefix before the rest is read.

    EOF raises ``asyncio.IncompleteReadError``; malformed input raises ``ProtocolError``.
    """
    prefix = await reader.readexactly(PREFIX_SIZE)
    rest, hlen = parse_prefix(prefix, max_frame_bytes)
    data = await reader.readexactly(rest)
    return split_frame(data, hlen)


def frame_parts(header: Mapping[str, Any], body: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """The buffers of one frame, for ``writer.writelines`` (the body is not copied)."""
    hdr = pack(dict(header))
    return [frame_prefix(hdr, len(body)), body] if len(body) else [frame_prefix(hdr, 0)]


def parts_size(parts: Sequence[bytes | memoryview]) -> int:
    return sum(len(p) for p in parts)


def server_ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """TLS context of the relay (TLS 1.2+), from a PEM certificate and key."""
    if cert is None or key is None:
        raise ConfigError("TLS is on but tls_cert or tls_key is not set; create them with tmrl.net.tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def client_ssl_context(cert: Path | None) -> tuple[ssl.SSLContext, bytes]:
    """TLS context of a client that trusts only the relay's own (pinned) certificate, and its SHA-256."""
    if cert is None:
        raise ConfigError("TLS is on but tls_cert (the relay's certificate, to pin) is not set")
    try:
        pem = Path(cert).read_text()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=pem)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load the relay certificate {cert}: {exc}") from None
    # The trust store holds only the relay's self-signed certificate; the hostname is not checked (the relay is
    # addressed by IP more often than not) but the exact certificate is pinned by its fingerprint.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx, hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()


def check_pin(writer: asyncio.StreamWriter, fingerprint: bytes) -> None:
    """Raise AuthError unless the peer's certificate is exactly the pinned one."""
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if der is None or hashlib.sha256(der).digest() != fingerprint:
        raise AuthError("the relay's TLS certificate is not the pinned one (tls_cert)")
