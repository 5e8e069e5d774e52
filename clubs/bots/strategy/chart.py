"""The private progress chart: a member's 1–5 sense of progress over time, as a small PNG.

Pure and dependency-free (zlib and struct): a white canvas, five grid lines labelled 1–5, a
tick at the start of each month, the entries as points joined by a line, placed by their date.
No text but the digits, so nothing of what the member wrote is in the picture; what the chart
shows is the member's own sense of each conversation, never a score of the relative.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

WIDTH, HEIGHT = 480, 240
LEFT, RIGHT, TOP, BOTTOM = 30, 14, 14, 22
SCALE = 2
"""Each pixel of the digit font is a SCALE × SCALE square."""

WHITE = (255, 255, 255)
GRID = (222, 226, 230)
AXIS = (120, 128, 136)
LINE = (43, 108, 176)
POINT = (24, 70, 120)

# A 3×5 font for the axis labels: each digit is five rows of three bits.
_DIGITS = {
    1: (0b010, 0b110, 0b010, 0b010, 0b111),
    2: (0b111, 0b001, 0b111, 0b100, 0b111),
    3: (0b111, 0b001, 0b111, 0b001, 0b111),
    4: (0b101, 0b101, 0b111, 0b001, 0b001),
    5: (0b111, 0b100, 0b111, 0b001, 0b111),
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Canvas:
    def __init__(self, width: int, height: int, background: tuple[int, int, int]) -> None:
        self.width = width
        self.height = height
        self.rows = [bytearray(bytes(background) * width) for _ in range(height)]

    def dot(self, x: int, y: int, colour: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            self.rows[y][3 * x : 3 * x + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                self.rows[y][3 * x : 3 * x + 3] = bytes(colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        """Bresenham, two pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.rect(x0, y0, x0 + 1, y0 + 1, colour)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def digit(self, n: int, x: int, y: int, colour: tuple[int, int, int]) -> None:
        for row, bits in enumerate(_DIGITS[n]):
            for col in range(3):
                if bits & (0b100 >> col):
                    sx, sy = x + col * SCALE, y + row * SCALE
                    self.rect(sx, sy, sx + SCALE - 1, sy + SCALE - 1, colour)

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(row) for row in self.rows)  # filter 0 per scanline
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            PNG_SIGNATURE
            + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def level_y(level: int) -> int:
    """The pixel row of a progress level (5 at the top)."""
    span = HEIGHT - TOP - BOTTOM
    return TOP + round((5 - level) * span / 4)


def point_xs(times: Sequence[float]) -> list[int]:
    """Pixel columns of the entries, by date; all on one day: spread evenly."""
    x0, x1 = LEFT + 8, WIDTH - RIGHT - 4
    if not times:
        return []
    lo, hi = min(times), max(times)
    if hi - lo < 1:
        if len(times) == 1:
            return [(x0 + x1) // 2]
        step = (x1 - x0) / (len(times) - 1)
        return [round(x0 + i * step) for i in range(len(times))]
    return [round(x0 + (t - lo) * (x1 - x0) / (hi - lo)) for t in times]


def month_starts(lo: float, hi: float) -> list[float]:
    """UTC instants of the first of each month after `lo` up to `hi`."""
    start = datetime.fromtimestamp(lo, UTC)
    year, month = start.year, start.month
    out: list[float] = []
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        at = datetime(year, month, 1, tzinfo=UTC).timestamp()
        if at > hi:
            return out
        out.append(at)


def progress_png(points: Sequence[tuple[float, int]]) -> bytes:
    """The chart of (time, level 1–5) entries, oldest first after sorting."""
    entries = sorted((t, min(5, max(1, int(level)))) for t, level in points)
    canvas = Canvas(WIDTH, HEIGHT, WHITE)
    for level in range(1, 6):
        y = level_y(level)
        canvas.rect(LEFT, y, WIDTH - RIGHT, y, GRID)
        canvas.digit(level, 8, y - 5, AXIS)
    canvas.rect(LEFT, TOP, LEFT, HEIGHT - BOTTOM, AXIS)
    canvas.rect(LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT, HEIGHT - BOTTOM, AXIS)
    times = [t for t, _ in entries]
    xs = point_xs(times)
    if len(times) > 1 and times[-1] - times[0] >= 1:
        lo, hi = times[0], times[-1]
        x0, x1 = xs[0], xs[-1]
        for at in month_starts(lo, hi):
            x = round(x0 + (at - lo) * (x1 - x0) / (hi - lo))
            canvas.rect(x, HEIGHT - BOTTOM + 1, x, HEIGHT - BOTTOM + 6, AXIS)
    ys = [level_y(level) for _, level in entries]
    for i in range(1, len(entries)):
        canvas.line(xs[i - 1], ys[i - 1], xs[i], ys[i], LINE)
    for x, y in zip(xs, ys, strict=True):
        canvas.rect(x - 3, y - 3, x + 3, y + 3, POINT)
    return canvas.png()
