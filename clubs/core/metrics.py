"""Counters, gauges and histograms for operators, exposed in Prometheus' text format (0.0.4).

A few dozen series, no dependency: each process has one `REGISTRY`; the bots' and the
provisioning service's HTTP endpoints render it at `/metrics`. Label values are names the code
chooses (a bot's name, a command's name, a job's kind, an outcome), never what a member typed,
a room or a user id: a metrics endpoint is read by monitoring, which must learn nothing about
who talks to whom.

    COMMANDS = REGISTRY.counter("clubs_bot_commands_total", "…", ("bot", "command", "outcome"))
    COMMANDS.inc(bot="checkins", command="checkin", outcome="ok")
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_SERIES = 2000
"""Per metric: label values come from code, so more than this is a bug, not traffic. A new
series past it is dropped (logged once per metric): metrics never fail the code that counts."""

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

LabelKey = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} is not a Prometheus name")
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"{name}: label {label!r} is not allowed")
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._lock = threading.Lock()
        self._full_logged = False

    def _key(self, values: dict[str, str]) -> LabelKey:
        if set(values) != set(self.labels):
            raise ValueError(f"{self.name}: labels {sorted(values)} != {sorted(self.labels)}")
        return tuple(str(values[label]) for label in self.labels)

    def _has_room(self, series: dict[LabelKey, object], key: LabelKey) -> bool:
        if key in series or len(series) < MAX_SERIES:
            return True
        if not self._full_logged:
            self._full_logged = True
            log.warning("metric %s: over %d series, new ones dropped", self.name, MAX_SERIES)
        return False

    def _labels(self, key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
        pairs = [*zip(self.labels, key, strict=True), *extra]
        if not pairs:
            return ""
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up")
        key = self._key(labels)
        with self._lock:
            if self._has_room(self._values, key):  # type: ignore[arg-type]
                self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{self._labels(k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value set by the code, or read at scrape time from `callback` (labels → value)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        callback: Callable[[], dict[LabelKey, float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelKey, float] = {}
        self._callbacks: list[Callable[[], dict[LabelKey, float]]] = []
        if callback is not None:
            self._callbacks.append(callback)

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            if self._has_room(self._values, key):  # type: ignore[arg-type]
                self._values[key] = float(value)

    def remove(self, **labels: str) -> None:
        with self._lock:
            self._values.pop(self._key(labels), None)

    def value(self, **labels: str) -> float | None:
        return self._values.get(self._key(labels))

    def lines(self) -> list[str]:
        with self._lock:
            values = dict(self._values)
        for callback in self._callbacks:
            values.update(callback())
        return [f"{self.name}{self._labels(k)} {_number(v)}" for k, v in sorted(values.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help_text, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{self.name}: buckets must increase")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts: dict[LabelKey, list[int]] = {}
        self._sums: dict[LabelKey, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            if not self._has_room(self._counts, key):  # type: ignore[arg-type]
                return
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        counts = self._counts.get(self._key(labels))
        return counts[-1] if counts else 0

    def lines(self) -> list[str]:
        out = []
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._counts.items())
            sums = dict(self._sums)
        for key, counts in items:
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                le = "+Inf" if math.isinf(bound) else repr(bound)  # `1.0`, as Prometheus writes
                out.append(f"{self.name}_bucket{self._labels(key, [('le', le)])} {n}")
            out.append(f"{self.name}_sum{self._labels(key)} {_number(sums[key])}")
            out.append(f"{self.name}_count{self._labels(key)} {counts[-1]}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.labels != metric.labels:
                raise ValueError(f"metric {metric.name} registered twice, differently")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        metric = self._add(Counter(name, help_text, labels))
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        metric = self._add(Gauge(name, help_text, labels))
        assert isinstance(metric, Gauge)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        metric = self._add(Histogram(name, help_text, labels, buckets))
        assert isinstance(metric, Histogram)
        return metric

    def kinds(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Each registered metric's name, type (`counter`, `gauge`, `histogram`) and labels."""
        return {n: (type(m).__name__.lower(), tuple(m.labels)) for n, m in self._metrics.items()}

    def render(self) -> str:
        """Every metric in the text exposition format, ending with a newline."""
        lines: list[str] = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            body = metric.lines()
            lines.extend(metric.header())
            lines.extend(body)
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = Registry()
"""The process's registry: every endpoint of this process renders it."""
