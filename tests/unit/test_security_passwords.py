"""The password policy: long enough, and not on the bundled list of common and breached passwords,
however it is dressed up."""

from __future__ import annotations

import pytest

from knowpay.accounts.passwords import check_password, common_passwords, password_problem
from knowpay.domain.errors import InvalidRequest


def test_the_bundled_list_has_thousands_of_passwords():
    listed = common_passwords()
    assert len(listed) > 5000
    assert {"password", "123456789", "iloveyou", "qwertyuiop", "woaini1314"} <= listed


@pytest.mark.parametrize("password", ["password", "PASSWORD", "qwertyuiop", "p@ssw0rd", "P4ssw0rd!",
                                      "dragon2024!", "michael1990", "iloveyou520",
                                      "baseball!!", "sunshine_1"])
def test_listed_passwords_and_their_disguises_are_refused(password):
    assert password_problem(password) is not None
    with pytest.raises(InvalidRequest) as refused:
        check_password(password)
    assert refused.value.param == "password"


@pytest.mark.parametrize("password", ["correct-horse-9", "long-enough-1", "demo-pass-2026", "Tr0ub4dor&3",
                                      "zhang-san-feng-77", "我的密码很长很长"])
def test_uncommon_passwords_pass(password):
    assert password_problem(password) is None


def test_too_short_is_its_own_code():
    with pytest.raises(InvalidRequest) as refused:
        check_password("Xy7!q")
    assert refused.value.code == "password_too_short"
    assert "at least 8" in refused.value.message


def test_a_listed_password_is_too_weak():
    with pytest.raises(InvalidRequest) as refused:
        check_password("iloveyou1")
    assert refused.value.code == "password_too_weak"


def test_the_password_may_not_be_the_email_or_username():
    assert password_problem("ann.lee@example.com", email="ann.lee@example.com") is not None
    assert password_problem("ann.lee.writes", username="ann.lee.writes") is not None
    assert password_problem("ann.lee.writes-9", username="ann.lee.writes") is None


def test_very_long_passwords_are_refused():
    assert password_problem("x" * 257) is not None
