from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clubs.bots.args import Choice, Duration, FreeText, Int, Problem, Room, User
from clubs.bots.base import ANY_EVENT, Bot, collect_event_handlers, on_event
from clubs.bots.commands import (
    MAX_COMMAND_CHARS,
    CommandSpec,
    HelpEntry,
    Invocation,
    UsageError,
    collect_commands,
    command,
    find_command,
    help_entries,
    read_invocation,
)


def text(body: object, **extra: object) -> dict[str, object]:
    return {"msgtype": "m.text", "body": body, **extra}


class Moderation:
    """A bot as a bot module would write one: marked methods, nothing registered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    @command("ping", aliases=("пинг",), help_key="bots/ping.help", dm=True)
    async def ping(self, ctx: object) -> None:
        self.calls.append(("ping", {}))

    @command(
        "mute",
        aliases=("мут",),
        params=(
            User("user"),
            Duration("duration", default=timedelta(hours=1), minimum=timedelta(minutes=1)),
            FreeText("reason", default="", max_length=20),
        ),
        min_power=50,
        help_key="moderation/mute.help",
    )
    async def mute(self, ctx: object, **args: object) -> None:
        self.calls.append(("mute", args))

    @command(
        "slowmode",
        params=(Choice("mode", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
        min_power=50,
        help_key="moderation/slowmode.help",
    )
    async def slowmode(self, ctx: object, mode: str) -> None:
        self.calls.append(("slowmode", {"mode": mode}))

    @command("kick", params=(Room("room"), Int("count", minimum=1, maximum=10)), help_key="k.help")
    async def kick(self, ctx: object, room: str, count: int) -> None:
        self.calls.append(("kick", {"room": room, "count": count}))

    def not_a_command(self) -> None: ...


@pytest.fixture
def bot() -> Moderation:
    return Moderation()


@pytest.fixture
def specs(bot: Moderation) -> list[CommandSpec]:
    return collect_commands(bot)


def spec(specs: list[CommandSpec], name: str) -> CommandSpec:
    found = find_command(specs, name)
    assert found is not None
    return found


# --- what is a command -----------------------------------------------------------------------


def test_a_command_word_and_its_arguments_are_read() -> None:
    assert read_invocation(text("!mute @a:b 10m  spam  here ")) == Invocation(
        "mute", "@a:b 10m  spam  here"
    )


def test_the_russian_alias_and_upper_case_are_read_as_typed_in_lower_case() -> None:
    assert read_invocation(text("!ПИНГ")) == Invocation("пинг", "")
    assert read_invocation(text("!Ping")) == Invocation("ping", "")


@pytest.mark.parametrize(
    "body",
    [
        "ping",
        "",
        "!",
        "! ping",
        " !ping",
        "！ping",  # full-width exclamation mark
        "‼ping",
        "!ping\n!ban @x:y",  # a second command on a second line
        "!ping\r!ban @x:y",
        "!ping\r\n!ban @x:y",
        "!ping\u2028!ban @x:y",
        "!ping\u2029!ban @x:y",
        "!ping\x85!ban @x:y",
        "!ping\x0b!ban @x:y",
        "!ping\x00",
        "!ping \ud800",
        "!ping\n",
        "> !ban @x:y",  # reply fallback line
        "> <@a:b> hello\n\n!ban @x:y",  # reply with its fallback
        "!p!ng",
        "!{0.__class__}",
        "!" + "a" * 33,
    ],
)
def test_these_bodies_are_not_commands(body: str) -> None:
    assert read_invocation(text(body)) is None


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.notice", "body": "!ping"},  # bots answer in notices
        {"msgtype": "m.emote", "body": "!ping"},
        {"body": "!ping"},
        text("* !ban @x:y", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}),
        text("* !ban @x:y", **{"m.new_content": {"msgtype": "m.text", "body": "!ban @x:y"}}),
        text(5),
        text(None),
        text(["!ping"]),
        "!ping",
        None,
        [],
    ],
)
def test_edits_notices_and_malformed_contents_are_not_commands(content: object) -> None:
    assert read_invocation(content) is None


def test_a_reply_without_fallback_is_a_command() -> None:
    content = text("!ping", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$e"}}})
    assert read_invocation(content) == Invocation("ping", "")


def test_a_64_kib_body_is_refused_quickly() -> None:
    for body in ("!ping " + "a" * 65_530, "!" + "a" * 65_535, "!ping " + "! " * 32_000):
        start = time.perf_counter()
        assert read_invocation(text(body)) is None
        assert time.perf_counter() - start < 0.01


def test_the_longest_accepted_command_parses_quickly(specs: list[CommandSpec]) -> None:
    mute = spec(specs, "mute")
    args = "@a:b 10m " + "x " * ((MAX_COMMAND_CHARS - 20) // 2)
    body = "!mute " + args
    start = time.perf_counter()
    invocation = read_invocation(text(body))
    assert invocation is not None
    with pytest.raises(UsageError) as err:
        mute.parse_args(invocation.args)
    assert err.value.problem is Problem.TOO_LONG
    assert time.perf_counter() - start < 0.01


def test_parsing_64_kib_of_arguments_is_fast_and_refused(specs: list[CommandSpec]) -> None:
    for args in ("a" * 65_536, "a " * 32_768, "@" + ":" * 65_535, "1" * 65_536):
        for s in specs:
            start = time.perf_counter()
            with pytest.raises(UsageError):
                s.parse_args(args)
            assert time.perf_counter() - start < 0.01


# --- collecting --------------------------------------------------------------------------------


def test_commands_are_collected_from_the_instance_sorted_and_bound(
    bot: Moderation, specs: list[CommandSpec]
) -> None:
    assert [s.name for s in specs] == ["kick", "mute", "ping", "slowmode"]
    assert spec(specs, "пинг").name == "ping"
    assert find_command(specs, "ban") is None
    assert spec(specs, "ping").handler.__self__ is bot  # type: ignore[attr-defined]


async def test_a_collected_handler_runs_with_the_parsed_arguments(
    bot: Moderation, specs: list[CommandSpec]
) -> None:
    mute = spec(specs, "мут")
    await mute.handler(None, **mute.parse_args("@x:y.org 2h being rude"))
    assert bot.calls == [
        ("mute", {"user": "@x:y.org", "duration": timedelta(hours=2), "reason": "being rude"})
    ]


def test_the_decorator_only_marks_and_two_instances_do_not_share_state() -> None:
    first, second = Moderation(), Moderation()
    assert collect_commands(first)[0].handler.__self__ is first  # type: ignore[attr-defined]
    assert collect_commands(second)[0].handler.__self__ is second  # type: ignore[attr-defined]


def test_a_name_declared_twice_in_one_bot_is_refused() -> None:
    class Clash:
        @command("ping", help_key="a")
        async def a(self, ctx: object) -> None: ...

        @command("pong", aliases=("ping",), help_key="b")
        async def b(self, ctx: object) -> None: ...

    with pytest.raises(ValueError, match=r"Clash: !ping is declared by a and b"):
        collect_commands(Clash())


class _Reports:
    """Commands and a handler kept in a class of their own, registered by the bot."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    @command("reports", aliases=("жалобы",), help_key="moderation/reports.help", min_power=50)
    async def reports(self, ctx: object) -> None: ...

    @on_event("m.room.member")
    async def member(self, ctx: object) -> None:
        self.seen.append(ctx)


class _SplitBot(Bot):
    name = "split"

    def __init__(self) -> None:
        self.reports = _Reports()
        self.register_handler_class(self.reports)

    @command("ping", help_key="bots/ping.help")
    async def ping(self, ctx: object) -> None: ...

    @on_event(ANY_EVENT)
    async def everything(self, ctx: object) -> None: ...


def test_commands_of_a_registered_handler_object_are_collected_bound_to_it() -> None:
    bot = _SplitBot()
    specs = collect_commands(bot)
    assert [s.name for s in specs] == ["ping", "reports"]
    assert spec(specs, "жалобы").handler.__self__ is bot.reports  # type: ignore[attr-defined]
    assert spec(specs, "ping").handler.__self__ is bot  # type: ignore[attr-defined]
    assert spec(specs, "reports").min_power == 50


async def test_event_handlers_of_a_registered_handler_object_are_collected() -> None:
    bot = _SplitBot()
    handlers = collect_event_handlers(bot)
    member = [h for h in handlers if h.wants("m.room.member")]
    assert len(member) == 2  # the bot's "*" handler and the registered object's
    assert [h.event_types for h in handlers if h.handler.__self__ is bot.reports] == [
        ("m.room.member",)
    ]
    assert not [h for h in handlers if h.wants("m.room.message") and h.event_types != ("*",)]
    for handler in handlers:
        await handler.handler("ctx")
    assert bot.reports.seen == ["ctx"]


def test_registrations_belong_to_one_bot_instance() -> None:
    class Plain(Bot):
        name = "plain"

    first, second = _SplitBot(), _SplitBot()
    for bot in (first, second):
        reports = spec(collect_commands(bot), "reports")
        assert reports.handler.__self__ is bot.reports  # type: ignore[attr-defined]
    assert collect_commands(Plain()) == []


def test_a_name_declared_by_the_bot_and_a_registered_object_is_refused() -> None:
    class Clashing(_SplitBot):
        @command("report", aliases=("reports",), help_key="r")
        async def report(self, ctx: object) -> None: ...

    with pytest.raises(ValueError, match=r"Clashing: !reports is declared by .* and .*reports"):
        collect_commands(Clashing())


def test_registering_the_same_object_twice_or_the_bot_itself_is_refused() -> None:
    bot = _SplitBot()
    with pytest.raises(ValueError, match="registered twice"):
        bot.register_handler_class(bot.reports)
    with pytest.raises(ValueError, match="registered twice"):
        bot.register_handler_class(bot)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Ping"}, "lowercase"),
        ({"name": "pi ng"}, "lowercase"),
        ({"name": "ping", "aliases": ("ping",)}, "must differ"),
        ({"name": "x", "params": (FreeText("a"), User("b"))}, "takes the rest"),
        ({"name": "x", "params": (User("a", default=None), User("b"))}, "required 'b' after"),
        ({"name": "x", "params": (User("a"), User("a"))}, "declared twice"),
        ({"name": "x", "params": (User("ctx"),)}, "bad parameter name"),
        ({"name": "x", "help_key": ""}, "help_key"),
    ],
)
def test_bad_declarations_fail_at_import(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"help_key": "h", **kwargs}
    with pytest.raises(ValueError, match=message):
        command(**args)  # type: ignore[arg-type]


# --- usage and arguments -----------------------------------------------------------------------


def test_usage_strings_are_exact(specs: list[CommandSpec]) -> None:
    assert spec(specs, "ping").usage() == "!ping"
    assert spec(specs, "mute").usage() == "!mute <user> [duration] [reason...]"
    assert spec(specs, "mute").usage("мут") == "!мут <user> [duration] [reason...]"
    assert spec(specs, "mute").usage("other") == "!mute <user> [duration] [reason...]"
    assert spec(specs, "slowmode").usage() == "!slowmode <on|off>"
    assert spec(specs, "kick").usage() == "!kick <room> <count>"


def test_optional_arguments_take_their_defaults(specs: list[CommandSpec]) -> None:
    assert spec(specs, "mute").parse_args("@a:b") == {
        "user": "@a:b",
        "duration": timedelta(hours=1),
        "reason": "",
    }


def test_typed_arguments_are_converted(specs: list[CommandSpec]) -> None:
    kick = spec(specs, "kick")
    assert kick.parse_args("#club:example.org 3") == {"room": "#club:example.org", "count": 3}
    assert kick.parse_args("!AbCdEf123_-x 10") == {"room": "!AbCdEf123_-x", "count": 10}
    slowmode = spec(specs, "slowmode")
    assert slowmode.parse_args("ВКЛ") == {"mode": "on"}
    assert slowmode.parse_args("off") == {"mode": "off"}
    mute = spec(specs, "mute")
    assert mute.parse_args("https://matrix.to/#/%40a%3Ab 1д30м")["duration"] == timedelta(
        days=1, minutes=30
    )


@pytest.mark.parametrize(
    ("name", "args", "problem", "param", "low", "high"),
    [
        ("mute", "", Problem.MISSING, "user", None, None),
        ("mute", "alice", Problem.INVALID, "user", None, None),
        ("mute", "--all", Problem.INVALID, "user", None, None),
        ("mute", "@a:b 10", Problem.INVALID, "duration", None, None),
        ("mute", "@a:b 30s", Problem.OUT_OF_RANGE, "duration", "1m", None),
        ("mute", "@a:b 1h " + "x" * 21, Problem.TOO_LONG, "reason", None, "20"),
        ("kick", "#a:b 0", Problem.OUT_OF_RANGE, "count", "1", "10"),
        ("kick", "#a:b ١", Problem.INVALID, "count", None, None),  # Arabic-Indic digit
        ("kick", "#a:b 1_0", Problem.INVALID, "count", None, None),
        ("kick", "#a:b +1", Problem.INVALID, "count", None, None),
        ("kick", "#a:b 1 2", Problem.TOO_MANY, None, None, None),
        ("kick", "club 1", Problem.INVALID, "room", None, None),
        ("slowmode", "maybe", Problem.INVALID, "on|off", None, None),
        ("ping", "extra", Problem.TOO_MANY, None, None, None),
    ],
)
def test_bad_arguments_raise_a_usage_error_saying_what_and_where(
    specs: list[CommandSpec],
    name: str,
    args: str,
    problem: Problem,
    param: str | None,
    low: str | None,
    high: str | None,
) -> None:
    command_spec = spec(specs, name)
    with pytest.raises(UsageError) as err:
        command_spec.parse_args(args)
    assert str(err.value) == f"usage: {command_spec.usage()}"
    assert (err.value.problem, err.value.param, err.value.low, err.value.high) == (
        problem,
        param,
        low,
        high,
    )


@pytest.mark.parametrize(
    "payload",
    [
        "$(rm -rf /)",
        "`id`",
        "; rm -rf / #",
        "| cat /etc/passwd",
        "{0.__class__}",
        "{0.__class__.__mro__}",
        "%s%s%s%n",
        "'; DROP TABLE users; --",
        "@room",
    ],
)
def test_injection_payloads_are_plain_data(specs: list[CommandSpec], payload: str) -> None:
    mute = spec(specs, "mute")
    with pytest.raises(UsageError) as err:
        mute.parse_args(payload)
    assert err.value.problem is Problem.INVALID
    assert payload not in str(err.value)  # never echoed back
    assert mute.parse_args(f"@a:b 1h {payload[:20]}")["reason"] == payload[:20].strip()


def test_a_usage_error_gives_the_template_values(specs: list[CommandSpec]) -> None:
    with pytest.raises(UsageError) as err:
        spec(specs, "kick").parse_args("#a:b 11")
    assert err.value.template_values() == {
        "usage": "!kick <room> <count>",
        "problem": "out_of_range",
        "param": "count",
        "low": "1",
        "high": "10",
    }


@given(st.text(max_size=300))
def test_parsing_any_text_raises_nothing_but_usage_error(args: str) -> None:
    for s in collect_commands(Moderation()):
        with contextlib.suppress(UsageError):
            s.parse_args(args)


@given(
    st.dictionaries(
        st.sampled_from(["msgtype", "body", "m.relates_to", "m.new_content", "format"]),
        st.one_of(
            st.text(),
            st.none(),
            st.integers(),
            st.just("m.text"),
            st.dictionaries(st.text(), st.text()),
        ),
    )
)
def test_reading_any_content_never_raises(content: dict[str, object]) -> None:
    invocation = read_invocation(content)
    if invocation is not None:
        assert "\n" not in invocation.args
        assert "\r" not in invocation.args


@given(st.text(alphabet=st.characters(), max_size=200))
def test_an_accepted_body_is_always_one_line(body: str) -> None:
    invocation = read_invocation(text("!" + body))
    if invocation is not None:
        assert len(("!" + body).splitlines()) == 1


# --- help and permissions ----------------------------------------------------------------------


def test_help_lists_only_what_the_sender_may_use(specs: list[CommandSpec]) -> None:
    assert help_entries(specs, 0, in_dm=False) == [
        HelpEntry("!kick <room> <count>", (), "k.help"),
        HelpEntry("!ping", ("!пинг",), "bots/ping.help"),
    ]
    assert [e.usage.split()[0] for e in help_entries(specs, 50, in_dm=False)] == [
        "!kick",
        "!mute",
        "!ping",
        "!slowmode",
    ]
    assert help_entries(specs, 100, in_dm=True) == [
        HelpEntry("!ping", ("!пинг",), "bots/ping.help")
    ]


def test_a_command_below_its_power_level_is_not_allowed(specs: list[CommandSpec]) -> None:
    mute = spec(specs, "mute")
    assert not mute.allows(49, in_dm=False)
    assert mute.allows(50, in_dm=False)
    assert not mute.allows(100, in_dm=True)
    assert spec(specs, "ping").allows(0, in_dm=True)
