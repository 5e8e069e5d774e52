"""`clubs up` and `clubs homeserver run` as a person runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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
        line = wait_for_line(out, proc, "Homeserver:", within=60)
        url = line.split("Homeserver:")[1].strip()
        with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=5) as resp:  # noqa: S310
            assert resp.status == 200
        pid = int((var / "synapse" / "homeserver.pid").read_text())
        assert alive(pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, err.read_text()
    return url, pid, err.read_text()


def test_up_prints_url_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    var = tmp_path / "var"
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
    assert line == (
        f"clubs: error: data directory {blocker / 'var' / 'synapse'} is not usable: Not a directory"
    )


def test_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = run_failing(["homeserver", "run", "--var-dir", str(tmp_path), "--port", str(port)])
    assert line == (
        f"clubs: error: port {port} on 127.0.0.1 is already in use (another homeserver?); "
        "choose another with --port or CLUBS_PORT"
    )


def test_synapse_that_fails_to_start_names_the_cause_and_the_log(tmp_path: Path) -> None:
    line = run_failing(
        [
            "homeserver",
            "run",
            "--var-dir",
            str(tmp_path),
            "--port",
            "0",
            "--server-name",
            "bad name",
        ]
    )
    data = tmp_path / "synapse"
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
