"""The PostgreSQL journal's own behaviour, on a real server: the [state] database setting, where the password
comes from, numbered migrations under a lock, one daemon per database, durable commits, and the commands that
open the configured journal."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import tomli_w

from runwatch.cli import main
from runwatch.config import parse_config
from runwatch.control import control_command
from runwatch.doctor import check_state
from runwatch.errors import ConfigError, JournalError
from runwatch.jobs.job import Job
from runwatch.jobs.states import State
from runwatch.store import Journal, journal_exists, open_store
from runwatch.store.pgschema import LOCK_CLASS, MIGRATE_LOCK, MIGRATIONS, Migration, migrate, schema_version
from runwatch.store.postgres import PostgresJournal

from .pgserver import PASSWORD, PASSWORD_ROLE, PgServer

LATEST = MIGRATIONS[-1].version
README = Path(__file__).resolve().parent.parent / "README.md"


def _config(tmp_path: Path, url: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {"dir": str(tmp_path / "state")}
    if url is not None:
        state["database"] = url
    return {"state": state, "inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}]}


def _job(job_id: str, name: str = "clip") -> Job:
    return Job(id=job_id, name=name, inbox="in", format="json", endpoint="text_to_speech", model="eleven_v3")


def _waits_for_migrate_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s)",
        (MIGRATE_LOCK,),
    ).fetchone()
    return row == (True,)


@pytest.fixture
def no_password_around(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No password reaches libpq but the one a test gives: no PGPASSWORD, and a password file that is not there."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


@pytest.fixture
def password_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database owned by a role that logs in with a password only."""
    name = pg_server.create_database(owner=PASSWORD_ROLE)
    yield pg_server.url(name, user=PASSWORD_ROLE)
    pg_server.drop_database(name)


class TestSetting:
    def test_a_postgresql_url_chooses_the_database(self, tmp_path: Path) -> None:
        """[state] database takes a postgresql:// URL; without it the journal stays SQLite in the state folder."""
        url = "postgresql://runwatch@db.example.org:5433/runwatch?sslmode=verify-full"
        assert parse_config(_config(tmp_path, url), "t.toml", env={}).state.database == url
        assert parse_config(_config(tmp_path, None), "t.toml", env={}).state.database is None

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://runwatch:hunter2secret@db.example.org/runwatch",
            "postgresql://runwatch:@db.example.org/runwatch",
            "postgresql://runwatch@db.example.org/runwatch?password=hunter2secret",
            "postgres://runwatch@db/runwatch?sslmode=require&sslpassword=hunter2secret",
        ],
    )
    def test_a_password_in_the_url_is_refused_and_never_shown(self, tmp_path: Path, url: str) -> None:
        """A password in the URL is refused, naming the key and where the password goes instead, without
        repeating it."""
        with pytest.raises(ConfigError) as caught:
            parse_config(_config(tmp_path, url), "t.toml", env={})
        text = str(caught.value)
        assert "state.database" in text and "PGPASSWORD" in text and "runwatch_db_password" in text
        assert "hunter2secret" not in text and url not in text

    @pytest.mark.parametrize("value", ["mysql://runwatch@db/runwatch", "db.example.org", "", 5432, "postgresql:/x"])
    def test_anything_but_a_postgresql_url_is_refused(self, tmp_path: Path, value: object) -> None:
        """A value that is not a postgresql:// URL is refused with the key and the expected form."""
        with pytest.raises(ConfigError, match=r"state\.database: expected a PostgreSQL URL, postgresql://"):
            parse_config(_config(tmp_path, value), "t.toml", env={})  # type: ignore[arg-type]

    def test_a_password_key_in_state_is_refused(self, tmp_path: Path) -> None:
        """[state] password = "…" is refused as a password, not as a mere unknown key, and not shown."""
        data = _config(tmp_path, "postgresql://runwatch@db/runwatch")
        data["state"]["db_password"] = "hunter2secret"
        with pytest.raises(ConfigError) as caught:
            parse_config(data, "t.toml", env={})
        assert "state.db_password: the database password never goes in the config file" in str(caught.value)
        assert "hunter2secret" not in str(caught.value)


class TestMigrations:
    @pytest.mark.parametrize("version", range(LATEST))
    def test_an_older_schema_is_brought_up_to_date(self, pg_server: PgServer, pg_database: str, version: int) -> None:
        """A database at any older version (0: never opened) is brought to the latest when the journal opens,
        each step recorded once."""
        with pg_server.admin(pg_database) as conn:
            if version:
                migrate(conn, "test", MIGRATIONS[:version])
        PostgresJournal(pg_server.url(pg_database)).close()
        with pg_server.admin(pg_database) as conn:
            assert schema_version(conn) == LATEST
            steps = conn.execute("SELECT version, name FROM runwatch_schema ORDER BY version").fetchall()
        assert steps == [(m.version, m.name) for m in MIGRATIONS]

    def test_a_later_step_keeps_the_jobs(self, pg_server: PgServer, pg_url: str, pg_database: str) -> None:
        """A step added after jobs were written (a column) runs once at the next open and the jobs read back as
        they were."""
        journal = PostgresJournal(pg_url)
        job = journal.add(_job("1"))
        journal.record_intent("1", first=True)
        journal.close()
        later = (*MIGRATIONS, Migration(LATEST + 1, "a note per job", "ALTER TABLE jobs ADD COLUMN note TEXT"))
        with pg_server.admin(pg_database) as conn:
            assert migrate(conn, "test", later) == LATEST
            assert migrate(conn, "test", later) == LATEST + 1  # nothing left to do
            assert schema_version(conn) == LATEST + 1
        with pg_server.admin(pg_database) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, note, attempts FROM jobs")
            assert cur.fetchall() == [("1", None, 1)]
        assert job.id == "1"

    def test_a_newer_database_is_refused_in_one_line(self, pg_server: PgServer, pg_url: str, pg_database: str) -> None:
        """A database written by a newer runwatch is refused with one line naming both versions, and left as
        it was."""
        PostgresJournal(pg_url).close()
        with pg_server.admin(pg_database) as conn:
            conn.execute("INSERT INTO runwatch_schema (version, name) VALUES (%s, 'from the future')", (LATEST + 1,))
        with pytest.raises(JournalError) as caught:
            PostgresJournal(pg_url)
        text = str(caught.value)
        assert "\n" not in text and pg_url in text
        assert f"has schema {LATEST + 1}, newer than this runwatch knows ({LATEST})" in text
        with pg_server.admin(pg_database) as conn:
            assert schema_version(conn) == LATEST + 1

    def test_a_failing_step_leaves_the_schema_as_it_was(
        self, pg_server: PgServer, pg_url: str, pg_database: str
    ) -> None:
        """A step that fails half way changes nothing: neither its first statements nor the version."""
        PostgresJournal(pg_url).close()
        broken = Migration(LATEST + 1, "broken", "ALTER TABLE jobs ADD COLUMN note TEXT; SELECT no_such_function()")
        with pg_server.admin(pg_database) as conn:
            with pytest.raises(psycopg.Error):
                migrate(conn, "test", (*MIGRATIONS, broken))
            assert schema_version(conn) == LATEST
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' AND column_name = 'note'"
            ).fetchall()
        assert columns == []

    def test_a_start_waits_for_a_migration_in_progress(
        self, pg_server: PgServer, pg_url: str, pg_database: str
    ) -> None:
        """Migrations run under an advisory lock: a journal opening while another process holds it waits,
        applies nothing meanwhile, and goes on once it is released."""
        opened: list[object] = []
        with pg_server.admin(pg_database) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, MIGRATE_LOCK))
            thread = threading.Thread(target=lambda: opened.append(PostgresJournal(pg_url)), daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while not _waits_for_migrate_lock(holder):
                assert time.monotonic() < deadline, "the opening journal never waited for the lock"
                time.sleep(0.02)
            assert schema_version(holder) == 0 and opened == []
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, MIGRATE_LOCK))
            thread.join(30)
            assert schema_version(holder) == LATEST
        assert len(opened) == 1 and isinstance(opened[0], PostgresJournal)
        opened[0].close()


class TestPasswords:
    @pytest.mark.usefixtures("no_password_around")
    def test_without_a_password_the_error_says_where_one_comes_from(self, password_url: str) -> None:
        """A role that needs a password and none given: a JournalError naming the database and the sources."""
        with pytest.raises(JournalError) as caught:
            PostgresJournal(password_url)
        text = str(caught.value)
        assert password_url in text and "\n" not in text
        assert "PGPASSWORD" in text and "PGPASSFILE" in text and "runwatch_db_password" in text

    @pytest.mark.usefixtures("no_password_around")
    def test_pgpassword(self, password_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """libpq's PGPASSWORD is used as it is."""
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        journal = PostgresJournal(password_url)
        assert journal.add(_job("1")).seq == 1
        journal.close()

    @pytest.mark.usefixtures("no_password_around")
    def test_a_password_file(self, password_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """libpq's password file (PGPASSFILE, else ~/.pgpass) is used as it is."""
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:{PASSWORD_ROLE}:{PASSWORD}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        journal = PostgresJournal(password_url)
        assert journal.counts() == {}
        journal.close()

    @pytest.mark.usefixtures("no_password_around")
    def test_the_systemd_credential(self, password_url: str, tmp_path: Path) -> None:
        """The systemd credential runwatch_db_password (its trailing newline dropped) is the password; a wrong
        one is an error that says so."""
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "runwatch_db_password").write_text(PASSWORD + "\n")
        config = parse_config(_config(tmp_path, password_url), "t.toml", env={})
        journal = open_store(config, {"CREDENTIALS_DIRECTORY": str(credentials)})
        assert isinstance(journal, PostgresJournal) and journal.jobs() == []
        journal.close()
        (credentials / "runwatch_db_password").write_text("wrong\n")
        with pytest.raises(JournalError, match="password authentication failed"):
            open_store(config, {"CREDENTIALS_DIRECTORY": str(credentials)})


class TestNodeNames:
    def test_a_second_live_node_with_the_same_name_is_refused(self, pg_url: str) -> None:
        """Several daemons share a database, each under its own node name: a second one joining with the name of
        a live node is refused, naming the first; another name joins; once the first stopped, its name is free."""
        first, second = PostgresJournal(pg_url), PostgresJournal(pg_url)
        first.join("suite", 10.0, host="a", pid=1, version="t", node_time=time.time())
        with pytest.raises(JournalError) as caught:
            second.join("suite", 10.0, host="b", pid=2, version="t", node_time=time.time())
        assert "the node name 'suite' is in use by a running runwatch on a (pid 1" in str(caught.value)
        second.join("other", 10.0, host="b", pid=2, version="t", node_time=time.time())
        first.leave()
        third = PostgresJournal(pg_url)
        third.join("suite", 10.0, host="c", pid=3, version="t", node_time=time.time())
        assert {(n.name, n.host, n.stopped) for n in third.nodes()} == {("other", "b", False), ("suite", "c", False)}
        for journal in (first, second, third):
            journal.close()


class TestCommits:
    def test_commits_wait_for_the_disk_even_where_the_server_would_not(
        self, pg_server: PgServer, pg_url: str, pg_database: str
    ) -> None:
        """A database set to synchronous_commit = off still gets durable commits from runwatch, and a waiting
        batch (committed without waiting) leaves the next commit durable."""
        with pg_server.admin() as conn:
            conn.execute(f'ALTER DATABASE "{pg_database}" SET synchronous_commit = off')
        journal = PostgresJournal(pg_url, pool_size=1)
        job = journal.add(_job("1"))
        journal.update(job, state=State.SUBMITTED, task_id="t1")
        job.state = State.RUNNING
        journal.save_waiting([job])
        with journal._cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchone() == {"synchronous_commit": "on"}
        journal.close()

    def test_a_database_not_in_utf8_is_refused(self, pg_server: PgServer) -> None:
        """Request names and bodies are Unicode: a database in another encoding is refused, saying which."""
        name = pg_server.create_database(encoding="SQL_ASCII")
        try:
            with pytest.raises(JournalError, match="has the encoding SQL_ASCII; runwatch needs UTF8"):
                PostgresJournal(pg_server.url(name))
        finally:
            pg_server.drop_database(name)


class TestCommandsOnTheDatabase:
    def _file(self, tmp_path: Path, url: str) -> Path:
        path = tmp_path / "runwatch.toml"
        path.write_text(tomli_w.dumps(_config(tmp_path, url)))
        return path

    def test_status_lists_the_jobs_of_the_database(
        self, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`runwatch status` reads the configured database; no SQLite journal is made."""
        journal = PostgresJournal(pg_url)
        journal.add(_job("1", name="forest"))
        journal.close()
        assert main(["status", "--json", "--config", str(self._file(tmp_path, pg_url))]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [(d["name"], d["state"], d["job"]) for d in shown] == [("forest", "accepted", "1")]
        assert not (tmp_path / "state" / "journal.sqlite3").exists()

    def test_a_cancel_is_recorded_in_the_database(self, pg_url: str, tmp_path: Path) -> None:
        """`runwatch cancel` with no daemon running leaves its command in the database's commands table."""
        journal = PostgresJournal(pg_url)
        journal.add(_job("1", name="forest"))
        err = io.StringIO()
        code = control_command("cancel", "forest", config_file=str(self._file(tmp_path, pg_url)), err=err, env={})
        assert code == 1 and "recorded for the daemon" in err.getvalue()
        assert [(c.kind, c.name) for c in journal.pending_commands()] == [("cancel", "forest")]
        journal.close()

    def test_doctor_looks_at_the_database(self, pg_url: str, tmp_path: Path) -> None:
        """`runwatch doctor` opens the configured database and counts its jobs; an unreachable one fails."""
        (tmp_path / "state").mkdir()
        journal = PostgresJournal(pg_url)
        journal.add_many([_job("1"), _job("2")])
        journal.close()
        config = parse_config(_config(tmp_path, pg_url), "t.toml", env={})
        assert journal_exists(config)
        result = check_state(config, {})
        assert result.status == "PASS" and result.detail.startswith(f"{pg_url}: 2 jobs, 2 active")
        gone = parse_config(_config(tmp_path, pg_url.replace("/test", "/nosuchdb")), "t.toml", env={})
        failed = check_state(gone, {})
        assert failed.status == "FAIL" and "nosuchdb" in failed.detail and "database is up" in failed.hint

    def test_a_moved_sqlite_journal_is_not_opened(self, tmp_path: Path) -> None:
        """A SQLite journal marked as moved refuses to open, naming the database to set instead."""
        path = tmp_path / "journal.sqlite3"
        Journal(path).close()
        import sqlite3

        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('moved_to', 'postgresql://runwatch@db/runwatch')")
        with pytest.raises(JournalError, match='set \\[state\\] database = "postgresql://runwatch@db/runwatch"'):
            Journal(path)


def _block(section: str, language: str) -> str:
    """The first ```LANGUAGE block of a README section."""
    text = README.read_text().split(section, 1)[1]
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


class TestReadme:
    def test_the_database_set_up_works_as_written(
        self, pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The README's SQL makes a role and a database the journal opens and writes in, as the role, with
        the password through PGPASSWORD and the README's [state] table (only the host is this test's)."""
        statements = [s.strip() for s in _block("## Several machines", "sql").split(";") if s.strip()]
        password = re.search(r"PASSWORD '([^']+)'", statements[0])
        assert password is not None and len(statements) == 2
        state = tomllib.loads(_block("## Several machines", "toml"))["state"]
        assert state["database"] == "postgresql://runwatch@db.example.org/runwatch"
        with pg_server.admin() as conn:
            for statement in statements:
                conn.execute(statement.encode())
        try:
            monkeypatch.setenv("PGPASSWORD", password[1])
            url = state["database"].replace(
                "@db.example.org/runwatch", "@/runwatch?host=" + quote(str(pg_server.root), safe="")
            )
            data = {
                "state": {"dir": str(tmp_path / "state"), "database": url},
                "inbox": _config(tmp_path, None)["inbox"],
            }
            journal = open_store(parse_config(data, "t.toml", env={}))
            assert journal.add(_job("1")).seq == 1 and journal.counts() == {"accepted": 1}
            journal.close()
        finally:
            pg_server.drop_database("runwatch")
            with pg_server.admin() as conn:
                conn.execute("DROP ROLE runwatch")
