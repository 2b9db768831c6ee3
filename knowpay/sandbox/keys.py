"""Locally generated key pairs for the sandbox's imitations of real channels (demo and tests).

`demo_key_pair(folder, name)` makes an RSA-2048 pair once and keeps it as PEM files, so the demo's
KnowPay and its sandbox gateway sign and verify each other exactly as production would.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def demo_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """(private key PEM path, public key PEM path) for `name`, created on first use."""
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.private.pem", folder / f"{name}.public.pem"
    if not private_path.exists() or not public_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        private_path.chmod(0o600)
        public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def keys_folder(instance_path: Path) -> Path:
    return instance_path / "sandbox-keys"
