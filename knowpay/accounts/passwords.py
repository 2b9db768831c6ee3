"""The password policy: long enough, and not a common or breached password from the bundled list.

The list (`knowpay/security/common-passwords.txt`) ships with the package; nothing is fetched at
run time. A password is refused when it is on the list, or is a listed one with letters swapped for
look-alike digits (`p@ssw0rd`) or with digits and punctuation added at the end (`dragon2024!`).
The same rule guards API registration, `knowpay users create`, password changes and Flask-Security's
forms (through `KnowPayPasswordUtil`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from flask_security import PasswordUtil

from knowpay.domain.errors import InvalidRequest

MIN_LENGTH = 8
MAX_LENGTH = 256
_LOOKALIKES = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                             "!": "i"})
_TRAILING = re.compile(r"[\d\W_]+$")


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("knowpay.security").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def is_common(password: str) -> bool:
    listed = common_passwords()
    lowered = password.lower()
    forms = [lowered]
    stripped = _TRAILING.sub("", lowered)
    if len(stripped) >= 4:
        forms.append(stripped)
    return any(form in listed or form.translate(_LOOKALIKES) in listed for form in forms)


def password_problem(password: str, *, email: str | None = None, username: str | None = None) -> str | None:
    """Why this password is refused, or None when it may be used."""
    if len(password) < MIN_LENGTH:
        return f"The password must have at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"The password must have at most {MAX_LENGTH} characters."
    lowered = password.lower()
    for personal in (email, (email or "").split("@")[0], username):
        if personal and len(personal) >= 3 and lowered == personal.lower():
            return "The password must not be your e-mail address or username."
    if is_common(password):
        return "This password is too common or has appeared in a data breach; choose another."
    return None


def check_password(password: str, *, email: str | None = None, username: str | None = None) -> None:
    """Raise InvalidRequest (param `password`) when the policy refuses the password."""
    problem = password_problem(password, email=email, username=username)
    if problem is not None:
        code = "password_too_short" if len(password) < MIN_LENGTH else "password_too_weak"
        raise InvalidRequest(problem, code=code, param="password")


class KnowPayPasswordUtil(PasswordUtil):
    """Flask-Security's forms (register, change, reset) use the same policy as the API."""

    def validate(self, password: str, is_register: bool, **kwargs: Any) -> tuple[list | None, str]:
        normalized = self.normalize(password)
        user = kwargs.get("user")
        email = kwargs.get("email") or getattr(user, "email", None)
        username = kwargs.get("username") or getattr(user, "username", None)
        problem = password_problem(normalized, email=email, username=username)
        return ([problem] if problem else None), normalized
