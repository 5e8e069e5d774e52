"""Where a bot's reply time goes, read from the bot process's own `/metrics` (the same
histograms monitoring reads): the sync lag (an event's origin on the homeserver to the bot
handling it) and the command's handler time (arrival to the handler's end), as means over the
run. What is left of a reply's time is the homeserver's: the send and the member's sync."""

from __future__ import annotations

import aiohttp


async def scrape(port: int) -> dict[str, float]:
    """`{series: value}` of the process's /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return {
        series: float(value)
        for series, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def mean_ms(figures: dict[str, float], name: str, labels: str) -> float | None:
    count = figures.get(f"{name}_count{{{labels}}}", 0.0)
    return figures[f"{name}_sum{{{labels}}}"] / count * 1e3 if count else None


def where_time_goes(figures: dict[str, float], bot: str, command: str) -> str:
    lag = mean_ms(figures, "clubs_bot_event_lag_seconds", f'bot="{bot}"')
    handler = mean_ms(figures, "clubs_bot_command_seconds", f'bot="{bot}",command="{command}"')
    count = figures.get(f'clubs_bot_command_seconds_count{{bot="{bot}",command="{command}"}}', 0)
    parts = [f"{int(count)} !{command} handled"]
    if lag is not None:
        parts.append(f"sync lag to the bot (origin -> handled) mean {lag:.1f} ms")
    if handler is not None:
        parts.append(f"handler (arrival -> end, its sends included) mean {handler:.1f} ms")
    return "; ".join(parts)
