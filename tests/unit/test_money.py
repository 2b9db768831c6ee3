"""Money: integer minor units per currency, exact parsing at the edges, and splits that add up."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knowpay.domain.errors import InvalidRequest
from knowpay.domain.money import (
    EXPONENTS,
    MAX_AMOUNT,
    Money,
    apply_rate_bps,
    check_amount,
    exponent,
    format_major,
    parse_major,
    split,
)

# --- parsing and formatting major units -------------------------------------------------------


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("99.00", "cny", 9900),
    ("99", "cny", 9900),
    ("99.5", "cny", 9950),
    ("0.01", "cny", 1),
    ("0.10", "cny", 10),
    ("1234567.89", "cny", 123456789),
    ("-12.34", "cny", -1234),
    (" 99.00 ", "cny", 9900),
    ("500", "jpy", 500),
    ("0", "jpy", 0),
    ("99.00", "usd", 9900),
])
def test_a_major_unit_string_parses_to_exact_minor_units(text, currency, minor):
    assert parse_major(text, currency) == minor
    assert Money.parse(text, currency) == Money(minor, currency)


def test_trailing_zeros_beyond_the_exponent_change_nothing():
    assert parse_major("99.000", "cny") == 9900
    assert parse_major("99.010", "cny") == 9901
    assert parse_major("500.00", "jpy") == 500


@pytest.mark.parametrize(("text", "currency"), [
    ("99.001", "cny"),   # a tenth of a fen does not exist
    ("0.005", "cny"),
    ("500.5", "jpy"),    # the yen has no minor unit
    ("0.1", "jpy"),
])
def test_more_decimal_places_than_the_currency_has_are_refused(text, currency):
    with pytest.raises(InvalidRequest) as caught:
        parse_major(text, currency)
    assert caught.value.code == "invalid_amount"
    assert "decimal places" in caught.value.message


@pytest.mark.parametrize("text", [
    "", " ", "abc", "99,00", "1e3", "99.", ".50", "+99.00", "--1", "99.00.00", "0x10", "NaN", "Infinity",
    "９９.００",  # full-width digits are not an amount a channel sends
    "٩٩",        # nor are Arabic-Indic ones
])
def test_text_that_is_not_a_plain_decimal_is_refused(text):
    with pytest.raises(InvalidRequest) as caught:
        parse_major(text, "cny")
    assert caught.value.code == "invalid_amount"


@pytest.mark.parametrize("value", [99.0, 9900, Decimal("99.00"), None, b"99.00"])
def test_parse_major_only_accepts_text(value):
    with pytest.raises(InvalidRequest):
        parse_major(value, "cny")  # type: ignore[arg-type]


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (9900, "cny", "99.00"),
    (1, "cny", "0.01"),
    (10, "cny", "0.10"),
    (0, "cny", "0.00"),
    (-5, "cny", "-0.05"),
    (-1234, "cny", "-12.34"),
    (123456789, "cny", "1234567.89"),
    (500, "jpy", "500"),
    (0, "jpy", "0"),
    (-7, "jpy", "-7"),
])
def test_minor_units_format_as_major_units_with_the_currency_exponent(minor, currency, text):
    assert format_major(minor, currency) == text
    assert Money(minor, currency).to_major() == text


@given(st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT), st.sampled_from(sorted(EXPONENTS)))
def test_formatting_then_parsing_gives_back_the_same_minor_units(minor, currency):
    assert parse_major(format_major(minor, currency), currency) == minor


def test_the_exponents_are_those_of_iso_4217():
    assert exponent("cny") == 2
    assert exponent("jpy") == 0
    assert exponent("coin") == 0


@pytest.mark.parametrize("currency", ["xyz", "CNY", "", "rmb"])
def test_an_unknown_currency_is_refused(currency):
    with pytest.raises(InvalidRequest) as caught:
        exponent(currency)
    assert (caught.value.code, caught.value.param) == ("invalid_currency", "currency")
    with pytest.raises(InvalidRequest):
        Money(100, currency)


def test_money_is_displayed_with_its_symbol():
    assert Money(9900, "cny").format() == "¥99.00"
    assert Money(-9900, "cny").format() == "-¥99.00"
    assert Money(500, "jpy").format() == "JP¥500"
    assert Money(1250, "sgd").format() == "SGD 12.50"


# --- Money values -----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [99.0, Decimal("99"), "9900", True, None])
def test_money_holds_only_integer_minor_units(amount):
    with pytest.raises(TypeError):
        Money(amount, "cny")  # type: ignore[arg-type]


def test_money_adds_and_subtracts_within_one_currency():
    assert Money(9900, "cny") + Money(100, "cny") == Money(10000, "cny")
    assert Money(9900, "cny") - Money(990, "cny") == Money(8910, "cny")
    assert -Money(990, "cny") == Money(-990, "cny")


def test_money_of_different_currencies_does_not_mix():
    with pytest.raises(ValueError, match="cny.*jpy"):
        Money(100, "cny") + Money(100, "jpy")
    with pytest.raises(ValueError):
        Money(100, "cny") - Money(100, "jpy")


def test_money_is_an_immutable_value():
    price = Money(9900, "cny")
    with pytest.raises(AttributeError):
        price.amount = 1  # type: ignore[misc]
    assert price == Money(9900, "cny")
    assert hash(price) == hash(Money(9900, "cny"))


# --- amounts arriving through the API --------------------------------------------------------


@pytest.mark.parametrize("value", [1, 9900, MAX_AMOUNT])
def test_a_positive_integer_amount_is_accepted(value):
    assert check_amount(value) == value


@pytest.mark.parametrize("value", [99.0, 9900.0, 0.5, float("nan"), float("inf")])
def test_a_float_amount_is_refused_with_a_clear_error(value):
    with pytest.raises(InvalidRequest) as caught:
        check_amount(value)
    assert (caught.value.code, caught.value.param) == ("invalid_amount", "amount")
    assert "integer number of minor units" in caught.value.message
    assert "float" in caught.value.message


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_amount_is_refused_even_though_python_counts_it_as_an_int(value):
    with pytest.raises(InvalidRequest) as caught:
        check_amount(value, allow_zero=True)
    assert "bool" in caught.value.message


@pytest.mark.parametrize("value", ["9900", "99.00", "", None, Decimal("9900"), [9900]])
def test_a_string_or_other_non_integer_amount_is_refused(value):
    with pytest.raises(InvalidRequest) as caught:
        check_amount(value)
    assert caught.value.code == "invalid_amount"


def test_the_refused_parameter_is_named_in_the_error():
    with pytest.raises(InvalidRequest) as caught:
        check_amount("5", param="items[0].amount")
    assert caught.value.param == "items[0].amount"
    assert "`items[0].amount`" in caught.value.message


@pytest.mark.parametrize("value", [0, -1, -9900])
def test_zero_and_negative_amounts_are_refused(value):
    with pytest.raises(InvalidRequest, match="positive"):
        check_amount(value)


def test_zero_is_accepted_only_when_allowed():
    assert check_amount(0, allow_zero=True) == 0
    with pytest.raises(InvalidRequest):
        check_amount(-1, allow_zero=True)


def test_an_amount_above_the_ceiling_is_refused():
    with pytest.raises(InvalidRequest, match="too large"):
        check_amount(MAX_AMOUNT + 1)


# --- fees in basis points ---------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "bps", "fee"), [
    (9900, 1000, 990),   # 10% of 99.00
    (9900, 60, 59),      # 0.6% of 99.00 is 59.4 fen
    (9950, 60, 60),      # 59.7 fen rounds up
    (50, 100, 1),        # exactly half a fen rounds up
    (49, 100, 0),
    (9900, 0, 0),
    (9900, 10000, 9900),
    (0, 600, 0),
])
def test_a_rate_in_basis_points_rounds_half_up_to_whole_minor_units(amount, bps, fee):
    assert apply_rate_bps(amount, bps) == fee


@given(st.integers(min_value=0, max_value=MAX_AMOUNT), st.integers(min_value=0, max_value=10000))
def test_a_fee_is_never_more_than_half_a_minor_unit_from_the_exact_rate(amount, bps):
    fee = apply_rate_bps(amount, bps)
    assert isinstance(fee, int)
    assert abs(Fraction(fee) - Fraction(amount * bps, 10000)) <= Fraction(1, 2)
    assert 0 <= fee <= amount


# --- splitting by largest remainder -----------------------------------------------------------


@pytest.mark.parametrize(("total", "weights", "parts"), [
    (100, [1, 1, 1], [34, 33, 33]),
    (200, [1, 1, 1], [67, 67, 66]),
    (-100, [1, 1, 1], [-34, -33, -33]),
    (1, [1, 1], [1, 0]),
    (9900, [9, 1], [8910, 990]),
    (1000, [9900, 100], [990, 10]),         # a 10.00 discount over a 99.00 and a 1.00 line
    (10, [0, 3, 0, 7], [0, 3, 0, 7]),
    (10, [1, 2, 3, 4], [1, 2, 3, 4]),
    (7, [2, 3, 5], [1, 2, 4]),              # exact 1.4, 2.1, 3.5: the 0.5 remainder gets the unit
    (0, [1, 2], [0, 0]),
    (5, [3], [5]),
])
def test_worked_examples_of_a_largest_remainder_split(total, weights, parts):
    assert split(total, weights) == parts


@pytest.mark.parametrize(("weights", "message"), [
    ([], "at least one"),
    ([1, -1], "non-negative"),
    ([0, 0], "not all be zero"),
])
def test_a_split_without_usable_weights_is_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        split(100, weights)


totals = st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=12).filter(any)


@given(totals, weight_lists)
def test_split_parts_always_sum_to_the_whole(total, weights):
    parts = split(total, weights)
    assert len(parts) == len(weights)
    assert all(type(p) is int for p in parts)
    assert sum(parts) == total


@given(totals, weight_lists)
def test_each_part_is_within_one_unit_of_its_exact_proportional_share(total, weights):
    weight_sum = sum(weights)
    for part, weight in zip(split(total, weights), weights, strict=True):
        assert abs(Fraction(part) - Fraction(total * weight, weight_sum)) < 1


@given(st.integers(min_value=0, max_value=MAX_AMOUNT), weight_lists)
def test_the_leftover_units_go_to_the_largest_remainders(total, weights):
    weight_sum = sum(weights)
    parts = split(total, weights)
    remainders = [total * w % weight_sum for w in weights]
    bumped = [i for i, (p, w) in enumerate(zip(parts, weights, strict=True)) if p != total * w // weight_sum]
    kept = [i for i in range(len(weights)) if i not in bumped]
    assert all(parts[i] == total * weights[i] // weight_sum + 1 for i in bumped)
    if bumped and kept:
        assert min(remainders[i] for i in bumped) >= max(remainders[i] for i in kept)


@given(totals, weight_lists)
def test_splitting_is_deterministic(total, weights):
    assert split(total, weights) == split(total, list(weights))
    assert split(total, weights) == split(total, weights)


@given(totals, weight_lists)
def test_a_zero_weight_gets_nothing(total, weights):
    parts = split(total, [*weights, 0])
    assert parts[-1] == 0
    for part, weight in zip(parts, [*weights, 0], strict=True):
        if weight == 0:
            assert part == 0


@given(st.integers(min_value=1, max_value=MAX_AMOUNT), weight_lists)
def test_a_negative_total_splits_as_the_mirror_of_the_positive_one(total, weights):
    assert split(-total, weights) == [-p for p in split(total, weights)]


@given(st.integers(min_value=0, max_value=MAX_AMOUNT), weight_lists, st.integers(min_value=2, max_value=50))
def test_scaling_every_weight_by_the_same_factor_changes_nothing(total, weights, factor):
    assert split(total, [w * factor for w in weights]) == split(total, weights)
