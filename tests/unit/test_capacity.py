"""The capacity model's arithmetic (clubs/capacity.py): demand, the largest rate, the fit."""

from __future__ import annotations

import math

import pytest

from clubs.capacity import TOTAL, Cost, Load, cores_needed, least_squares, max_rate


def test_demand_adds_every_term() -> None:
    cost = Cost(
        base=0.01,
        per_member=0.001,
        per_event=0.01,
        per_response=0.002,
        per_delivery=0.003,
        per_command=0.1,
    )
    load = Load(members=100, rate=2.0, recipients=10, commands=0.5)
    # one answer per delivery (no turnaround): 20 deliveries, 20 answers
    assert cost.demand(load) == pytest.approx(0.01 + 0.1 + 0.02 + 0.04 + 0.06 + 0.05)


def test_answers_carry_more_messages_as_the_rate_grows() -> None:
    load = Load(members=10, rate=5.0, recipients=10, turnaround=0.2)
    # 50 deliveries/s over 10 members: 5 each per second, 1 + 5 * 0.2 = 2 per answer
    assert load.deliveries() == 50
    assert load.responses() == pytest.approx(25)
    assert Load(members=10, rate=0.0, recipients=10, turnaround=0.2).responses() == 0


def test_max_rate_is_where_the_cores_run_out() -> None:
    costs = {
        "pg": Cost(base=0.1, per_event=0.05, single_core=False),
        "py": Cost(base=0.1, per_event=0.05),
    }
    # on one core, the total 0.2 + 0.1 r reaches 0.9 at r = 7, before py alone (r = 16)
    cap = max_rate(costs, 1, Load(members=0), headroom=0.9)
    assert cap.limit == TOTAL
    assert cap.rate == pytest.approx(7.0)
    assert cap.demand[TOTAL] == pytest.approx(0.9)


def test_one_python_process_limits_however_many_cores() -> None:
    costs = {
        "worker": Cost(per_event=0.1),
        "pg": Cost(per_event=0.01, single_core=False),
    }
    cap = max_rate(costs, 8, Load(members=0), headroom=1.0)
    assert cap.limit == "worker"
    assert cap.rate == pytest.approx(10.0)


def test_members_alone_can_use_up_a_core() -> None:
    costs = {"worker": Cost(per_member=0.01, per_event=0.1)}
    assert max_rate(costs, 4, Load(members=200), headroom=1.0).rate == 0.0


def test_bad_cores_or_headroom_are_refused() -> None:
    with pytest.raises(ValueError, match="headroom"):
        max_rate({}, 2, Load(members=0), headroom=1.5)


def test_cores_needed_names_the_overloaded_process() -> None:
    costs = {"worker": Cost(per_event=0.1), "pg": Cost(per_event=0.2, single_core=False)}
    need, over = cores_needed(costs, Load(members=0, rate=10.0), headroom=0.5)
    assert need == pytest.approx(6.0)
    assert over == ["worker"]


def test_least_squares_recovers_exact_coefficients_and_averages_noise() -> None:
    rows = [[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]
    assert least_squares(rows, [1.0, 3.0, 5.0, 7.0]) == pytest.approx([1.0, 2.0])
    # y = 1 + 2x with +-0.1 noise: the line through the middle
    x = least_squares(rows, [1.1, 2.9, 5.1, 6.9])
    assert x == pytest.approx([1.06, 1.96])


def test_least_squares_refuses_what_the_rows_cannot_tell_apart() -> None:
    with pytest.raises(ValueError, match="column 1"):
        least_squares([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2 rows cannot fit 3"):
        least_squares([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [1.0, 1.0])


def test_a_load_that_costs_nothing_per_message_has_no_limit() -> None:
    assert math.isinf(max_rate({"x": Cost(single_core=False)}, 1, Load(0), 1.0).rate)
