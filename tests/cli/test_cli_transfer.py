"""``perdura export``, ``import`` and ``store backup|restore`` against real SQLite stores."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import cli_app
import pytest
from cli_support import APP, Cli

from engine import Client
from history import load_history
from tests.pg_support import drop_schema, schema_url


def _hello(cli: Cli, workflow_id: str = "hello-1") -> None:
    cli.run(lambda client: client.execute_workflow(cli_app.hello, "ada", id=workflow_id))


@pytest.fixture
def other(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """A second, empty store (another machine, a laptop)."""
    return Cli(capsys, f"sqlite:///{tmp_path / 'laptop.db'}")


# -- export --------------------------------------------------------------------------------


def test_export_without_a_file_prints_the_export_on_stdout(cli: Cli) -> None:
    _hello(cli)
    run_id = cli("describe", "hello-1", "--json").json()["run_id"]
    done = cli("export", "hello-1")
    assert done.code == 0, done.err
    exported = load_history(done.out.encode())
    assert (exported.run_id, exported.workflow_id, exported.workflow_type) == (
        run_id,
        "hello-1",
        "hello",
    )
    assert len(exported.events) == 4


def test_export_to_a_file_says_what_it_wrote(cli: Cli, tmp_path: Path) -> None:
    _hello(cli)
    target = tmp_path / "hello.json"
    done = cli("export", "hello-1", "-o", str(target), "--json")
    assert done.code == 0, done.err
    summary = done.json()
    assert (summary["events"], summary["path"], summary["status"]) == (
        4,
        str(target),
        "completed",
    )
    assert summary["bytes"] == target.stat().st_size
    assert len(load_history(target.read_bytes()).events) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_export_into_a_folder_that_does_not_exist_is_a_one_line_error(
    cli: Cli, tmp_path: Path
) -> None:
    _hello(cli)
    done = cli("export", "hello-1", "-o", str(tmp_path / "nope" / "h.json"))
    assert done.code == 1
    assert "does not exist" in done.error_line()


def test_export_of_an_unknown_id_is_a_one_line_error(cli: Cli) -> None:
    _hello(cli)
    done = cli("export", "nobody")
    assert (done.code, done.out) == (1, "")
    assert "no workflow or run with id 'nobody'" in done.error_line()


# -- import --------------------------------------------------------------------------------


def test_import_stores_a_closed_run_exactly_as_exported(
    cli: Cli, other: Cli, tmp_path: Path
) -> None:
    _hello(cli)
    file = tmp_path / "hello.json"
    assert cli("export", "hello-1", "-o", str(file)).code == 0
    done = other("import", str(file))
    assert done.code == 0, done.err
    assert done.out.startswith("imported workflow 'hello-1' (run ")
    assert (
        other("history", "hello-1", "--json").json() == cli("history", "hello-1", "--json").json()
    )
    assert other("result", "hello-1").out == '"HELLO ADA"\n'


def test_import_under_another_workflow_id(cli: Cli, other: Cli, tmp_path: Path) -> None:
    _hello(cli)
    file = tmp_path / "hello.json"
    cli("export", "hello-1", "-o", str(file))
    done = other("import", str(file), "--workflow-id", "copy-1", "--json")
    assert done.code == 0, done.err
    assert (done.json()["workflow_id"], done.json()["status"]) == ("copy-1", "completed")


def test_importing_the_same_run_twice_is_refused(cli: Cli, other: Cli, tmp_path: Path) -> None:
    _hello(cli)
    file = tmp_path / "hello.json"
    cli("export", "hello-1", "-o", str(file))
    assert other("import", str(file)).code == 0
    done = other("import", str(file))
    assert done.code == 1
    assert "already exists" in done.error_line()


def test_an_imported_open_run_continues_on_the_new_stores_workers(
    cli: Cli, other: Cli, tmp_path: Path
) -> None:
    async def waiting(client: Client) -> None:
        handle = await client.start_workflow(cli_app.Approval, "doc", id="doc-1")
        async with asyncio.timeout(10):
            while len(await handle.history()) < 3:  # its first step is done: it waits
                await client.store.wait_for_run(handle.run_id or "", 0.02)

    cli.run(waiting)
    file = tmp_path / "doc.json"
    cli("export", "doc-1", "-o", str(file))
    done = other("import", str(file), "--json")
    assert done.code == 0, done.err
    imported = done.json()
    assert imported["status"] == "running"
    assert imported["run_id"] != imported["imported_from_run_id"]

    assert other("signal", "doc-1", "approve", "--arg", '"ann"').code == 0

    async def finish(client: Client) -> object:
        async with asyncio.timeout(10):
            return await client.get_handle("doc-1").result()

    assert other.run(finish) == "doc approved by ann"
    assert cli_app.steps == {"doc:prepare": 1}  # its recorded result came along


def test_importing_a_file_that_is_not_an_export_names_it_and_creates_no_store(
    other: Cli, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": "world"}')
    done = other("import", str(bogus))
    assert done.code == 1
    assert f"{bogus} is not a perdura history export" in done.error_line()
    assert not (tmp_path / "laptop.db").exists()


def test_importing_a_missing_file_is_a_one_line_error(other: Cli, tmp_path: Path) -> None:
    done = other("import", str(tmp_path / "missing.json"))
    assert done.code == 1
    assert "cannot read history file" in done.error_line()


# -- store backup and restore --------------------------------------------------------------


def test_backup_copies_every_run(cli: Cli, tmp_path: Path) -> None:
    _hello(cli, "hello-1")
    _hello(cli, "hello-2")
    dest = tmp_path / "backup.db"
    done = cli("store", "backup", str(dest), "--json")
    assert done.code == 0, done.err
    assert (done.json()["runs"], done.json()["path"]) == (2, str(dest))
    copy = cli("list", "--json", "--store", str(dest), store=False).json()
    assert copy == cli("list", "--json").json()


def test_backup_refuses_to_overwrite_unless_asked(cli: Cli, tmp_path: Path) -> None:
    _hello(cli)
    dest = tmp_path / "backup.db"
    assert cli("store", "backup", str(dest)).code == 0
    done = cli("store", "backup", str(dest))
    assert done.code == 1
    assert "already exists" in done.error_line()
    assert cli("store", "backup", str(dest), "--overwrite").code == 0


def test_backup_of_a_postgresql_store_points_to_pg_dump(cli: Cli, tmp_path: Path) -> None:
    done = cli(
        "store",
        "backup",
        str(tmp_path / "b.db"),
        "--store",
        "postgresql://postgres@127.0.0.1/test",
        store=False,
    )
    assert done.code == 1
    assert "copies SQLite stores; back PostgreSQL up with pg_dump" in done.error_line()


def test_restore_into_a_new_store_brings_every_run_back(cli: Cli, tmp_path: Path) -> None:
    _hello(cli, "hello-1")
    _hello(cli, "hello-2")
    backup = tmp_path / "backup.db"
    cli("store", "backup", str(backup))
    restored = tmp_path / "restored.db"
    done = cli("store", "restore", str(backup), "--store", str(restored), "--json", store=False)
    assert done.code == 0, done.err
    assert (done.json()["runs"], done.json()["events"], done.json()["skipped"]) == (2, 8, 0)
    copy = cli("list", "--json", "--store", str(restored), store=False).json()
    assert [(r["run_id"], r["status"]) for r in copy] == [
        (r["run_id"], r["status"]) for r in cli("list", "--json").json()
    ]


def test_restore_into_a_store_that_holds_runs_is_refused(cli: Cli, tmp_path: Path) -> None:
    _hello(cli, "hello-1")
    backup = tmp_path / "backup.db"
    cli("store", "backup", str(backup))
    _hello(cli, "after-the-backup")
    done = cli("store", "restore", str(backup))
    assert done.code == 1
    assert "already holds 2 runs" in done.error_line()
    assert len(cli("list", "--json").json()) == 2


def test_restore_with_resume_skips_the_runs_already_restored(cli: Cli, tmp_path: Path) -> None:
    _hello(cli, "hello-1")
    backup = tmp_path / "backup.db"
    cli("store", "backup", str(backup))
    target = ["--store", str(tmp_path / "restored.db")]
    assert cli("store", "restore", str(backup), *target, store=False).code == 0
    done = cli("store", "restore", str(backup), *target, "--resume", "--json", store=False)
    assert done.code == 0, done.err
    assert (done.json()["runs"], done.json()["skipped"]) == (0, 1)


def test_restore_from_a_file_that_is_not_a_store_creates_nothing(tmp_path: Path, cli: Cli) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    done = cli("store", "restore", str(junk))
    assert done.code == 1
    assert "damaged or not a SQLite" in done.error_line()
    assert not (tmp_path / "runs.db").exists()


def test_restore_from_a_missing_backup_is_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    done = cli("store", "restore", str(tmp_path / "nope.db"))
    assert done.code == 1
    assert "does not exist" in done.error_line()


# -- store migrate -------------------------------------------------------------------------


def test_migrate_copies_every_run_into_an_empty_store_and_verifies_it(
    cli: Cli, tmp_path: Path
) -> None:
    _hello(cli, "hello-1")
    target = f"sqlite:///{tmp_path / 'big.db'}"
    done = cli("store", "migrate", cli.url, target, store=False)
    assert done.code == 0, done.err
    assert done.out.startswith("copied 1 runs (0 open), 4 events and 0 activity tasks from ")
    assert done.out.rstrip().endswith("; verified")
    assert (
        cli("history", "hello-1", "--json", "--store", target, store=False).json()
        == cli("history", "hello-1", "--json").json()
    )


def test_migrate_from_a_store_that_does_not_exist_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "big.db"
    done = cli("store", "migrate", str(tmp_path / "typo.db"), str(target), store=False)
    assert done.code == 1
    assert "does not exist" in done.error_line()
    assert not target.exists()


def test_migrate_takes_no_store_option(cli: Cli, tmp_path: Path) -> None:
    done = cli("store", "migrate", "a.db", "b.db")  # the fixture appends --store URL
    assert done.code == 2
    assert "unrecognized arguments: --store" in done.err


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL store in a schema of its own on the test server, dropped afterwards."""
    schema = f"cli_test_{uuid.uuid4().hex[:12]}"
    yield schema_url(schema)
    asyncio.run(drop_schema(schema))


def test_migrate_from_sqlite_to_postgresql_keeps_every_history(cli: Cli, postgres_url: str) -> None:
    _hello(cli, "hello-1")
    done = cli("store", "migrate", cli.url, postgres_url, "--json", store=False)
    assert done.code == 0, done.err
    assert done.json()["runs"] == 1
    on_postgres = cli("history", "hello-1", "--json", "--store", postgres_url, store=False)
    assert on_postgres.json() == cli("history", "hello-1", "--json").json()
    replayed = cli("replay", "hello-1", *APP, "--store", postgres_url, store=False)
    assert replayed.code == 0, replayed.err
