"""A test bot with durable jobs, hosted by `botproc.py --bot jobs`.

`!remind <n>` schedules n `remind` jobs due one or two seconds ahead, keyed by the command's
event id and their index (a replayed command schedules nothing new). Each job posts one notice,
`Reminder <label>`, into the room named in its payload, with a txn id from `ctx.txn(...)`:
a job run again after a crash re-sends the same transaction, which Synapse absorbs. The label is
`<command event id>#<index>`, so a test knows which notices to expect. The command itself sends
nothing, so every send of this bot is a job's.

Benchmarks schedule `remind` jobs straight into the bots' database (`JobStore.add`, payload
`{"room": ..., "label": ...}`) while the process is stopped.
"""

from __future__ import annotations

from clubs.bots.args import Int
from clubs.bots.base import Bot
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.host import BotFactory, HostServices
from clubs.bots.jobs import JobContext, on_job
from clubs.core.http import RoomId

KIND = "remind"
JOB_TEMPLATES = {
    "test/reminder.en.txt.j2": "Reminder {{ label }}\n",
    "test/reminder.ru.txt.j2": "Напоминание {{ label }}\n",
    "test/remind.help.en.txt.j2": "schedule reminders\n",
    "test/remind.help.ru.txt.j2": "запланировать напоминания\n",
}


def label_of(command_event_id: str, index: int) -> str:
    return f"{command_event_id}#{index}"


def notice_text(label: str) -> str:
    return f"Reminder {label}"


class JobBot(Bot):
    """One notice per job, exactly once as seen in the room."""

    name = "jobs"

    @command("remind", help_key="test/remind.help", params=(Int("n", minimum=1, maximum=50),))
    async def remind(self, ctx: CommandContext, n: int) -> None:
        now = ctx.bot.clock.now()
        for i in range(n):
            label = label_of(ctx.event.event_id, i)
            await ctx.bot.jobs.schedule(
                KIND, label, now + 1 + i % 2, {"room": ctx.room_id, "label": label}
            )

    @on_job(KIND)
    async def post(self, ctx: JobContext) -> None:
        room = RoomId(str(ctx.payload["room"]))
        await ctx.bot.notice(
            room, "test/reminder", job=ctx.txn("notice"), label=ctx.payload["label"]
        )


def job_factory(name: str) -> BotFactory:
    """A JobBot named after its account (job rows and txn ids then say which bot it is)."""
    cls = type(f"JobBot_{name}", (JobBot,), {"name": name})

    def make(_: HostServices) -> Bot:
        bot: Bot = cls()
        return bot

    return make
