"""Small analytics rules with worked examples: periods, splitting amounts over lines, device classes,
amount bands, CSV."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from knowpay.analytics.metrics import Query, next_period, periods, ratio_int
from knowpay.analytics.service import rows_as_csv
from knowpay.analytics.source import allocate, amount_band, device_class_of, local, viewer_key


def test_periods_cover_the_range_from_the_start_of_its_first_period():
    q = Query(metric="gmv", start=date(2026, 1, 28), end=date(2026, 3, 2), granularity="week")
    assert periods(q)[0] == date(2026, 1, 26)  # the Monday of that week
    assert periods(q)[-1] == date(2026, 3, 2)
    months = Query(metric="gmv", start=date(2025, 11, 15), end=date(2026, 2, 1), granularity="month")
    assert periods(months) == [date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1)]
    assert next_period(date(2025, 12, 1), "month") == date(2026, 1, 1)


@pytest.mark.parametrize("total, weights, parts", [
    (100, [1, 1, 1], [33, 33, 34]),
    (9900, [9900], [9900]),
    (7, [0, 5, 5], [0, 3, 4]),
    (5, [3, 0], [5, 0]),
    (0, [1, 2], [0, 0]),
    (-10, [1, 1], [-5, -5]),
])
def test_an_amount_is_split_over_lines_in_whole_units_that_add_up(total, weights, parts):
    assert allocate(total, weights) == parts
    assert sum(allocate(total, weights)) == (total if any(weights) else 0)


def test_money_per_head_rounds_half_up():
    assert (ratio_int(5, 2), ratio_int(7, 3), ratio_int(0, 0)) == (3, 2, 0)


@pytest.mark.parametrize("agent, device", [
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", "mobile"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36", "mobile"),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) Safari/537.36", "tablet"),
    ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)", "tablet"),
    ("Mozilla/5.0 (Linux; Android 12) MicroMessenger/8.0.40 Mobile", "mobile"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0", "desktop"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)", "desktop"),
    ("curl/8.0", "unknown"),
    (None, "unknown"),
])
def test_the_device_class_comes_from_the_user_agent(agent, device):
    assert device_class_of(agent) == device


def test_amount_bands_are_in_yuan():
    assert [amount_band(a) for a in (999, 1000, 4999, 9900, 19999, 20000, 99999, 100000)] == [
        "0-10", "10-50", "10-50", "50-200", "50-200", "200-1000", "200-1000", "1000+"]


def test_local_days_follow_the_platform_time_zone():
    from zoneinfo import ZoneInfo

    assert local(datetime(2026, 11, 24, 16, 30), ZoneInfo("Asia/Shanghai")) == datetime(2026, 11, 25, 0, 30)
    assert local(None, ZoneInfo("UTC")) is None


def test_viewer_keys_name_nobody_but_tell_visitors_apart():
    assert viewer_key("1.2.3.4", "agent") == viewer_key("1.2.3.4", "agent") != viewer_key("1.2.3.5", "agent")
    assert "1.2.3.4" not in viewer_key("1.2.3.4", "agent") and len(viewer_key("usr_x")) == 24


def test_csv_spreads_list_figures_over_numbered_columns():
    rows = [{"period": "2026-01-01", "buyers": 2, "retained": [2, 1], "rate": None},
            {"period": "2026-02-01", "buyers": 1, "retained": [1], "rate": 0.5}]
    assert rows_as_csv(rows).splitlines() == ["period,buyers,retained_0,retained_1,rate",
                                              "2026-01-01,2,2,1,", "2026-02-01,1,1,,0.5"]
    assert rows_as_csv([]) == "period\n"
