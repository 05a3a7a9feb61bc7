"""Optional Ed25519 signatures over manifest.json's exact bytes (`manifest.sig`, raw 64 bytes).

The manifest pins every file's sha256, so a valid signature covers the whole bundle. Needs the `cryptography` package
(`pip install edgekit[sign]`); keys are PEM files (`openssl genpkey -algorithm ed25519 -out key.pem`,
`openssl pkey -in key.pem -pubout -out pub.pem`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.bundling.manifest import MANIFEST, SIGNATURE
from edgekit.errors import BundleError, MissingDependency

INSTALL = "pip install edgekit[sign]"


def _serialization() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise MissingDependency(f"signing and checking bundle signatures needs the 'cryptography' package; "
                                f"install it with `{INSTALL}`") from None
    return serialization


def _read_key(path: str | Path, private: bool) -> Any:
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    kind = "private" if private else "public"
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read the {kind} key {p} ({e.strerror}); give an Ed25519 PEM file") from None
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise BundleError(f"{p} is not an unencrypted PEM {kind} key ({e}); accepted: an Ed25519 {kind} key "
                          "in PEM") from None
    want = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, want):
        raise BundleError(f"{p} holds a {type(key).__name__}; accepted: an Ed25519 {kind} key in PEM")
    return key


def check_keys_usable(sign_key: str | Path | None = None, public_key: str | Path | None = None) -> None:
    """Fail early (before a slow export) when a key is given but cannot be used."""
    if sign_key is not None:
        _read_key(sign_key, private=True)
    if public_key is not None:
        _read_key(public_key, private=False)


def sign_folder(folder: Path, private_key: str | Path) -> None:
    key = _read_key(private_key, private=True)
    (folder / SIGNATURE).write_bytes(key.sign((folder / MANIFEST).read_bytes()))


def check_signature(folder: Path, manifest_bytes: bytes, public_key: str | Path) -> None:
    """BundleError unless `folder/manifest.sig` is a valid signature of `manifest_bytes` by `public_key`."""
    key = _read_key(public_key, private=False)
    from cryptography.exceptions import InvalidSignature

    sig = folder / SIGNATURE
    if not sig.is_file():
        raise BundleError(f"{folder} has no {SIGNATURE} but a public key was given ({public_key}): the bundle is "
                          "unsigned; ask its publisher for a signed one (edgekit bundle ... --sign-key KEY.pem)")
    try:
        key.verify(sig.read_bytes(), manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{sig} is not a valid signature of {folder / MANIFEST} by the key {public_key}: the "
                          "bundle was changed after signing or signed by another key; do not run it") from None
