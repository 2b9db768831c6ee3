"""Encryption at rest for sensitive fields (payout bank details, TOTP secrets, contact data).

AES-256-GCM with the key id in every value, so keys can rotate: new values use the newest key
(`KNOWPAY_ENCRYPTION_KEYS`, newest first) and old values stay readable until re-encrypted.
Stored form: `kpe1:<key id>:<base64 of nonce + ciphertext>`.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "kpe1"


class DecryptionError(ValueError):
    """The value was not made with any configured key, or it was altered."""


class FieldCipher:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._newest_id = keys[0][0]
        self._keys = {key_id: AESGCM(raw) for key_id, raw in keys}

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        """`context` (e.g. the owning row's id) is bound in, so a value cannot be moved to another row."""
        nonce = os.urandom(12)
        sealed = self._keys[self._newest_id].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}:{self._newest_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, *, context: str = "") -> str:
        try:
            prefix, key_id, payload = stored.split(":", 2)
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            raise DecryptionError("not an encrypted value") from None
        if prefix != PREFIX or key_id not in self._keys:
            raise DecryptionError(f"no key {key_id!r} to decrypt with")
        try:
            return self._keys[key_id].decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise DecryptionError("the value was altered or belongs elsewhere") from None

    def encrypt_json(self, value: dict, *, context: str = "") -> str:
        return self.encrypt(json.dumps(value, ensure_ascii=False, sort_keys=True), context=context)

    def decrypt_json(self, stored: str, *, context: str = "") -> dict:
        return json.loads(self.decrypt(stored, context=context))

    def needs_rotation(self, stored: str) -> bool:
        return stored.split(":", 2)[1:2] != [self._newest_id]

    def rotate(self, stored: str, *, context: str = "") -> str:
        """The same plaintext under the newest key."""
        return self.encrypt(self.decrypt(stored, context=context), context=context)
