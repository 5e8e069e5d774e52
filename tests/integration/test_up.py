"""`clubs up` and `clubs homeserver run` as a person runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mautrix.types import RoomID

from clubs.core.admin import login_password
from clubs.core.http import MatrixHttp, path
from tests.harness import Account, eventually
from tests.mautrix_client import mautrix_peer

CLUBS = [sys.executable, "-m", "clubs.cli"]


def wait_for_line(out: Path, proc: subprocess.Popen[bytes], needle: str, within: float) -> str:
    """Poll the process's stdout file until a line containing `needle` appears."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not printed within {within}s: {out.read_text()!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every practical purpose; /proc tells.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


def up_once(var: Path, logs: Path) -> tuple[str, int, str]:
    """Run `clubs up` until it is ready; Ctrl-C it; return (url, synapse pid, stderr)."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*CLUBS, "up", "--var-dir", str(var), "--port", "0"], stdout=o, stderr=e
        )
    try:
        line = wait_for_line(out, proc, "Homeserver:", within=120)  # PostgreSQL: ~60 s
        url = line.split("Homeserver:")[1].strip()
        with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=5) as resp:  # noqa: S310
            assert resp.status == 200
        pid = int((var / "synapse" / "homeserver.pid").read_text())
        assert alive(pid)
        pids = all_pids(var)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, err.read_text()
    wait_all_gone(pids, within=5)
    return url, pid, err.read_text()


def test_up_prints_url_stops_cleanly_and_resumes(tmp_path: Path, server_tmp: Path) -> None:
    var = server_tmp / "var"
    _, pid, err = up_once(var, tmp_path / "first")
    assert not alive(pid), "Synapse survived Ctrl-C"
    assert "provisioner @provisioner:clubs.local created" in err
    signing_key = (var / "synapse" / "signing.key").read_bytes()
    vault = (var / "secrets" / "vault").read_bytes()

    demo = json.loads((var / "demo.json").read_text())
    assert set(demo) == {"homeserver", "members", "bots", "rooms"}
    assert len(demo["members"]) >= 20
    assert set(demo["bots"]) == {"moderation", "facilitation", "scheduling", "checkins"}
    assert "berlin/general" in demo["rooms"]
    assert (var / "demo.json").stat().st_mode & 0o077 == 0

    _, pid2, err2 = up_once(var, tmp_path / "second")
    assert not alive(pid2)
    assert "provisioner @provisioner:clubs.local reused" in err2
    assert "No changes: network commclubs already matches (0 writes)." in err2
    assert (var / "synapse" / "signing.key").read_bytes() == signing_key
    assert (var / "secrets" / "vault").read_bytes() == vault  # no new account, no new token


def start_up(var: Path, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `clubs up` and wait for its banner; returns (process, homeserver URL)."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*CLUBS, "up", "--var-dir", str(var), "--port", "0"], stdout=o, stderr=e
        )
    try:
        line = wait_for_line(out, proc, "Homeserver:", within=120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, line.split("Homeserver:")[1].strip()


def all_pids(var: Path) -> dict[str, int]:
    """Every process `clubs up` reports: its children (var/run/*.pid) and Synapse."""
    pids = {f.stem: int(f.read_text()) for f in (var / "run").glob("*.pid")}
    pids["synapse"] = int((var / "synapse" / "homeserver.pid").read_text())
    return pids


def wait_all_gone(pids: dict[str, int], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.1)
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind: {left}"


def sync_keeps_answering(url: str, token: str, stop: list[bool], errors: list[str]) -> None:
    """A member's client long-polling /sync (1 s) until told to stop; records any failure."""
    since = ""
    while not stop:
        query = "timeout=1000" + (f"&since={since}" if since else '&filter={"room":{"rooms":[]}}')
        req = urllib.request.Request(  # noqa: S310 - our loopback URL
            f"{url}/_matrix/client/v3/sync?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                since = json.loads(resp.read())["next_batch"]
        except Exception as e:
            errors.append(type(e).__name__)
            return


async def test_killed_bots_are_back_within_5s_while_the_homeserver_keeps_serving(
    tmp_path: Path, server_tmp: Path
) -> None:
    var = server_tmp / "var"
    proc, url = start_up(var, tmp_path / "up")
    err = (tmp_path / "up").with_suffix(".err")
    try:
        http = member_http = MatrixHttp(url)
        demo = json.loads((var / "demo.json").read_text())
        person = next(m for m in demo["members"] if f"{m['clubs'][0]}/general" in demo["rooms"])
        room = demo["rooms"][f"{person['clubs'][0]}/general"]
        session = await login_password(http, person["user_id"], person["password"])
        member_http = MatrixHttp(url, session.access_token)
        member = Account(session, person["password"], member_http)
        await member.http.post(path("_matrix", "client", "v3", "join", room), {})
        bots = set(demo["bots"].values())

        async def bots_joined() -> bool:
            got = await member.http.get(
                path("_matrix", "client", "v3", "rooms", room, "joined_members")
            )
            return demo["bots"]["moderation"] in got.get("joined", {})

        await eventually(bots_joined, within=30)
        pids = all_pids(var)
        stop: list[bool] = []
        errors: list[str] = []
        poller = threading.Thread(
            target=sync_keeps_answering, args=(url, session.access_token, stop, errors)
        )
        poller.start()
        async with mautrix_peer(member, url) as peer:
            try:
                ready = var / "run" / "bots.ready"
                assert ready.exists()
                killed_at = time.monotonic()
                os.kill(pids["bots"], signal.SIGKILL)

                async def back() -> bool:
                    """A new bots process has written its pid to the ready file."""
                    pid = all_pids(var).get("bots")
                    try:
                        written = ready.read_text().strip()
                    except FileNotFoundError:
                        return False
                    return pid not in (None, pids["bots"]) and written == str(pid)

                await eventually(back, within=30, interval=0.02)
                back_s = time.monotonic() - killed_at
                event = await peer.client.send_text(RoomID(room), "!ping")

                async def answered() -> bool:
                    return any(r.reply_to == event and r.sender in bots for r in peer.received)

                await eventually(answered, within=30, interval=0.05)
                reply_s = time.monotonic() - killed_at
                print(f"bots ready {back_s:.2f} s after SIGKILL; !ping answered at {reply_s:.2f} s")
            finally:
                stop.append(True)
                poller.join(15)
        assert errors == [], "the homeserver stopped answering /sync"
        assert alive(pids["synapse"])
        assert alive(pids["homeserver"])
        assert alive(pids["serve"])
        assert back_s <= 5.0, f"the bots were back only {back_s:.2f} s after the kill"
        assert f"bots (pid {pids['bots']}) was killed by SIGKILL after" in err.read_text()
        assert "bots is back" in err.read_text()
        pids = all_pids(var)
    finally:
        for client in {http, member_http}:
            await client.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, err.read_text()
    wait_all_gone(pids, within=5)


def test_sigkilled_supervisor_leaves_no_orphan_and_up_resumes(
    tmp_path: Path, server_tmp: Path
) -> None:
    var = server_tmp / "var"
    proc, _ = start_up(var, tmp_path / "first")
    pids = all_pids(var)
    assert set(pids) == {"supervisor", "homeserver", "serve", "bots", "synapse"}
    assert pids["supervisor"] == proc.pid
    proc.kill()
    proc.wait()
    wait_all_gone(pids, within=30)
    # A second `clubs up` after the hard kill resumes.
    _, pid, err = up_once(var, tmp_path / "second")
    assert not alive(pid)
    assert "No changes: network commclubs already matches (0 writes)." in err


def run_failing(args: list[str]) -> str:
    proc = subprocess.run(CLUBS + args, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("clubs: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_unusable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = run_failing(["homeserver", "run", "--var-dir", str(blocker / "var"), "--port", "0"])
    if os.environ.get("CLUBS_DB") == "postgres":  # the city's own cluster is prepared first
        assert line == (
            f"clubs: error: PostgreSQL's directory {blocker / 'var' / 'secrets' / 'postgres'} is "
            "not usable: Not a directory"
        )
        return
    assert line == (
        f"clubs: error: data directory {blocker / 'var' / 'synapse'} is not usable: Not a directory"
    )


def test_taken_port_is_one_clear_error(server_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = run_failing(["homeserver", "run", "--var-dir", str(server_tmp), "--port", str(port)])
    assert line == (
        f"clubs: error: port {port} on 127.0.0.1 is already in use (another homeserver?); "
        "choose another with --port or CLUBS_PORT"
    )


def test_synapse_that_fails_to_start_names_the_cause_and_the_log(server_tmp: Path) -> None:
    line = run_failing(
        [
            "homeserver",
            "run",
            "--var-dir",
            str(server_tmp),
            "--port",
            "0",
            "--server-name",
            "bad name",
        ]
    )
    data = server_tmp / "synapse"
    assert line.startswith("clubs: error: Synapse exited with code 1 during start-up: ")
    assert "Error in configuration: Server name 'bad name' has an invalid format" in line
    assert line.endswith(f"see {data / 'homeserver.console.log'} and {data / 'homeserver.log'}")
    assert not (data / "homeserver.pid").exists()


@pytest.mark.parametrize("bad", ["-1", "70000", "http"])
def test_bad_port_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLUBS, "homeserver", "run", "--var-dir", str(tmp_path), "--port", bad],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--port" in proc.stderr
