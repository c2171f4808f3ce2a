"""Verifying GoHighLevel webhook signatures, as the official SDK does
(``highlevel/webhook/webhook_manager.py``): ``x-ghl-signature`` is Ed25519 over the raw body,
``x-wh-signature`` the legacy RSA-SHA256 (PKCS#1 v1.5) over the raw body, both base64. The
Ed25519 header takes precedence when present; a request with neither, or whose scheme has no
configured key, is refused."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


class BadPublicKey(ValueError):
    """A configured public key that cannot be read."""


def load_ed25519(text: str) -> Ed25519PublicKey:
    """A PEM (SPKI) Ed25519 public key, or its raw 32 bytes as base64 or hex (the SDK's forms)."""
    key = text.strip()
    try:
        if "-----BEGIN" in key:
            loaded = serialization.load_pem_public_key(key.encode())
            if not isinstance(loaded, Ed25519PublicKey):
                raise BadPublicKey("not an Ed25519 public key")
            return loaded
        if len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(key, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise BadPublicKey(f"cannot read the Ed25519 public key: {exc}") from None


def load_rsa(text: str) -> RSAPublicKey:
    """A PEM RSA public key."""
    try:
        loaded = serialization.load_pem_public_key(text.strip().encode())
    except ValueError as exc:
        raise BadPublicKey(f"cannot read the RSA public key: {exc}") from None
    if not isinstance(loaded, RSAPublicKey):
        raise BadPublicKey("not an RSA public key")
    return loaded


def _b64(signature: str) -> bytes | None:
    try:
        return base64.b64decode(signature.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None


@dataclass(frozen=True)
class Verifier:
    """The configured keys; :meth:`verify` says which scheme verified the body, or None."""

    ed25519: Ed25519PublicKey | None = None
    rsa: RSAPublicKey | None = None

    @classmethod
    def from_pem(cls, ed25519: str | None, rsa: str | None) -> Verifier:
        return cls(load_ed25519(ed25519) if ed25519 else None, load_rsa(rsa) if rsa else None)

    def verify(self, body: bytes, ghl_signature: str | None, wh_signature: str | None) -> str | None:
        """``"ed25519"`` or ``"rsa"`` when the body is signed by a configured key, else None.
        The Ed25519 header decides when present (a bad one is not rescued by the legacy one)."""
        if ghl_signature:
            sig = _b64(ghl_signature)
            if self.ed25519 is None or sig is None or len(sig) != 64:
                return None
            try:
                self.ed25519.verify(sig, body)
            except InvalidSignature:
                return None
            return "ed25519"
        if wh_signature:
            sig = _b64(wh_signature)
            if self.rsa is None or sig is None:
                return None
            try:
                self.rsa.verify(sig, body, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return None
            return "rsa"
        return None
