"""The progress chart is a valid PNG (signature, IHDR, CRCs, IDAT inflating to the image) and
shows the points where their level and date put them."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime

from clubs.bots.strategy.chart import (
    HEIGHT,
    LINE,
    POINT,
    WHITE,
    WIDTH,
    level_y,
    month_starts,
    point_xs,
    progress_png,
)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        out.append((kind, data))
        pos += 12 + length
    return out


def pixels(png: bytes) -> list[bytes]:
    parts = chunks(png)
    raw = zlib.decompress(b"".join(d for k, d in parts if k == b"IDAT"))
    stride = 1 + 3 * WIDTH
    assert len(raw) == stride * HEIGHT
    rows = [raw[i * stride : (i + 1) * stride] for i in range(HEIGHT)]
    assert {r[0] for r in rows} == {0}
    return [r[1:] for r in rows]


def at(rows: list[bytes], x: int, y: int) -> tuple[int, ...]:
    return tuple(rows[y][3 * x : 3 * x + 3])


def day(m: int, d: int) -> float:
    return datetime(2026, m, d, 12, tzinfo=UTC).timestamp()


def test_the_chart_is_a_valid_png_of_the_declared_size() -> None:
    png = progress_png([(day(10, 1), 2), (day(11, 15), 3), (day(12, 1), 5)])
    parts = chunks(png)
    assert [k for k, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    assert (width, height, depth, colour, comp, filt, interlace) == (WIDTH, HEIGHT, 8, 2, 0, 0, 0)
    assert parts[-1][1] == b""
    assert len(png) < 20_000


def test_points_sit_at_their_level_and_date() -> None:
    times = [day(10, 1), day(11, 1), day(12, 1)]
    rows = pixels(progress_png(list(zip(times, [1, 3, 5], strict=True))))
    xs = point_xs(times)
    for x, level in zip(xs, [1, 3, 5], strict=True):
        assert at(rows, x, level_y(level)) == POINT
    assert xs[0] < xs[1] < xs[2]
    # Between the points, the line; far from them, the background.
    mid = (xs[0] + xs[1]) // 2
    column = [at(rows, mid, y) for y in range(HEIGHT)]
    assert LINE in column
    assert at(rows, WIDTH - 3, 3) == WHITE


def test_one_entry_and_same_day_entries_are_drawn() -> None:
    (alone,) = point_xs([day(12, 1)])
    assert point_xs([day(10, 1), day(12, 1)])[0] < alone < point_xs([day(10, 1), day(12, 1)])[1]
    same = point_xs([day(12, 1)] * 3)
    assert len(set(same)) == 3
    rows = pixels(progress_png([(day(12, 1), 4)]))
    (x,) = point_xs([day(12, 1)])
    assert at(rows, x, level_y(4)) == POINT


def test_levels_out_of_range_are_clamped_and_months_ticked() -> None:
    rows = pixels(progress_png([(day(10, 1), 9), (day(12, 1), -1)]))
    xs = point_xs([day(10, 1), day(12, 1)])
    assert at(rows, xs[0], level_y(5)) == POINT
    assert at(rows, xs[1], level_y(1)) == POINT
    assert [datetime.fromtimestamp(t, UTC).day for t in month_starts(day(10, 1), day(12, 1))] == [
        1,
        1,
    ]
