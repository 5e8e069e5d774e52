"""The metrics registry renders what Prometheus' own parser reads back, and refuses misuse."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clubs.core.metrics import MAX_SERIES, Registry


def test_what_is_rendered_parses_back_with_the_same_values() -> None:
    reg = Registry()
    commands = reg.counter("t_commands_total", "Commands.", ("bot", "outcome"))
    commands.inc(bot="checkins", outcome="ok")
    commands.inc(2, bot="checkins", outcome="ok")
    commands.inc(bot='we"ird\\bot\nname', outcome="usage")
    ready = reg.gauge("t_ready", "Ready.", ("bot",))
    ready.set(1, bot="checkins")
    lag = reg.histogram("t_lag_seconds", "Lag.", ("bot",), (0.5, 1.0, 5.0))
    for value in (0.1, 0.7, 0.9, 3.0, 60.0):
        lag.observe(value, bot="checkins")

    families = {f.name: f for f in text_string_to_metric_families(reg.render())}

    counted = {
        (s.labels["bot"], s.labels["outcome"]): s.value
        for s in families["t_commands"].samples
        if s.name == "t_commands_total"
    }
    assert counted == {("checkins", "ok"): 3.0, ('we"ird\\bot\nname', "usage"): 1.0}
    assert families["t_commands"].type == "counter"
    assert [(s.labels, s.value) for s in families["t_ready"].samples] == [
        ({"bot": "checkins"}, 1.0)
    ]
    buckets = {
        s.labels["le"]: s.value
        for s in families["t_lag_seconds"].samples
        if s.name == "t_lag_seconds_bucket"
    }
    assert buckets == {"0.5": 1.0, "1.0": 3.0, "5.0": 4.0, "+Inf": 5.0}
    (total,) = [s.value for s in families["t_lag_seconds"].samples if s.name.endswith("_sum")]
    assert total == pytest.approx(64.7)
    assert lag.count(bot="checkins") == 5


def test_misuse_is_refused() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="not a Prometheus name"):
        reg.counter("bad-name", "x")
    with pytest.raises(ValueError, match="not allowed"):
        reg.counter("ok_total", "x", ("le",))
    counter = reg.counter("ok_total", "x", ("bot",))
    with pytest.raises(ValueError, match="labels"):
        counter.inc(room="!secret:server")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, bot="a")
    with pytest.raises(ValueError, match="registered twice"):
        reg.gauge("ok_total", "x", ("bot",))
    assert reg.counter("ok_total", "x", ("bot",)) is counter  # the same, asked again
    for n in range(MAX_SERIES):
        counter.inc(bot=str(n))
    counter.inc(bot="one too many")  # dropped, never raised into the caller
    assert counter.value(bot="one too many") == 0
    assert counter.value(bot="0") == 1
    assert "one too many" not in reg.render()
