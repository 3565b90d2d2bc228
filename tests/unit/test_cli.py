"""The ``perdura`` command in-process (``main([...])``) against real SQLite stores.

The worker command is exercised as a real process in ``tests/e2e/test_cli_worker.py``; here
it is only asked to load bad apps, which fails before any worker starts.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.cli import App, AppLoadError, load_app, main
from history import TimerStarted
from sdk import (
    ApplicationError,
    WorkflowFailureError,
    activity,
    open_client,
    open_worker,
    workflow,
)


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
async def hello(name: str) -> str:
    return await greet(name)


@workflow.defn
async def doomed(reason: str) -> None:
    raise ApplicationError(reason, type="OutOfStock", non_retryable=True)


@workflow.defn
async def napping(seconds: float) -> str:
    await workflow.sleep(seconds)
    return "rested"


APP = App(workflows=[hello, doomed, napping], activities=[greet])
DAY = 86400.0


async def _populate(url: str) -> dict[str, str]:
    """Three runs: one completed, one failed, one waiting on a day-long timer."""
    async with open_client(url) as client:
        async with open_worker(
            client, task_queue="default", workflows=APP.workflows, activities=APP.activities
        ):
            done = await client.start_workflow(hello, "ada", id="hello-1")
            assert await done.result() == "hello ada"
            failed = await client.start_workflow(doomed, "no stock", id="doomed-1")
            with pytest.raises(WorkflowFailureError):
                await failed.result()
            nap = await client.start_workflow(napping, DAY, id="nap-1")
            async with asyncio.timeout(10):
                while not any(isinstance(e, TimerStarted) for e in await nap.history()):
                    await client.store.wait_for_run(nap.run_id or "", 0.05)
    assert done.run_id is not None
    assert failed.run_id is not None
    assert nap.run_id is not None
    return {"hello-1": done.run_id, "doomed-1": failed.run_id, "nap-1": nap.run_id}


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A store URL with the three runs of ``_populate``, shared by the read-only tests."""
    db = tmp_path_factory.mktemp("cli") / "runs.db"
    url = f"sqlite:///{db}"
    return url, asyncio.run(_populate(url))


@pytest.fixture
def store_url(populated: tuple[str, dict[str, str]]) -> str:
    return populated[0]


@pytest.fixture
def run_ids(populated: tuple[str, dict[str, str]]) -> dict[str, str]:
    return populated[1]


@pytest.fixture
def fresh_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fresh.db'}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("perdura: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- list ----------------------------------------------------------------------------------


def test_list_prints_a_header_and_one_row_per_run_newest_first(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = run(capsys, "list", "--store", store_url)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == "WORKFLOW ID TYPE STATUS STARTED (UTC) DURATION EVENTS RUN ID".split()
    assert [row.split()[:3] for row in rows] == [
        ["nap-1", "napping", "running"],
        ["doomed-1", "doomed", "failed"],
        ["hello-1", "hello", "completed"],
    ]


def test_list_filters_by_status_type_and_limit(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    _, out, _ = run(capsys, "list", "--store", store_url, "--status", "failed")
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["doomed-1"]
    _, out, _ = run(capsys, "list", "--store", store_url, "--type", "hello")
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["hello-1"]
    _, out, _ = run(capsys, "list", "--store", store_url, "--limit", "1")
    assert len(out.splitlines()) == 2


def test_list_json_gives_every_run_field(
    capsys: pytest.CaptureFixture[str], store_url: str, run_ids: dict[str, str]
) -> None:
    code, out, _ = run(capsys, "list", "--store", store_url, "--json")
    assert code == 0
    runs = {r["workflow_id"]: r for r in json.loads(out)}
    assert runs["hello-1"]["run_id"] == run_ids["hello-1"]
    assert runs["hello-1"]["status"] == "completed"
    assert runs["hello-1"]["history_length"] == 4
    assert runs["nap-1"]["closed_at"] is None
    assert runs["nap-1"]["wake_at"] is not None  # released until its timer is due


def test_list_with_no_match_says_so_on_stderr(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, err = run(capsys, "list", "--store", store_url, "--status", "cancelled")
    assert (code, out) == (0, "")
    assert "no matching runs" in err


def test_store_defaults_to_the_environment_variable(
    capsys: pytest.CaptureFixture[str], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURA_STORE", store_url)
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    assert len(json.loads(out)) == 3


# -- describe, history, timeline -----------------------------------------------------------


def test_describe_shows_a_waiting_runs_timer_and_owner(
    capsys: pytest.CaptureFixture[str], store_url: str, run_ids: dict[str, str]
) -> None:
    code, out, _ = run(capsys, "describe", "nap-1", "--store", store_url)
    assert code == 0
    fields = dict(line.split("  ", 1) for line in out.splitlines())
    assert fields["workflow id"].strip() == "nap-1"
    assert fields["run id"].strip() == run_ids["nap-1"]
    assert fields["status"].strip() == "running"
    assert fields["owner"].strip().startswith("none")
    assert "fires" in fields["timer T1"]


def test_describe_json_of_a_failed_run_carries_its_failure(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = run(capsys, "describe", "doomed-1", "--store", store_url, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "failed"
    assert data["failure"] == "OutOfStock: no stock"
    assert data["result"] is None
    assert data["pending_activities"] == []
    assert data["pending_timers"] == []


def test_describe_accepts_a_run_id(
    capsys: pytest.CaptureFixture[str], store_url: str, run_ids: dict[str, str]
) -> None:
    code, out, _ = run(capsys, "describe", run_ids["hello-1"], "--store", store_url, "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["workflow_id"], data["result"]) == ("hello-1", "hello ada")


def test_history_has_one_row_per_event_with_decoded_payloads(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = run(capsys, "history", "hello-1", "--store", store_url)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "TIME", "(UTC)", "OFFSET", "TYPE", "DETAILS"]
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4"]
    assert [row.split()[3] for row in rows] == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    assert 'hello("ada")' in rows[0]
    assert '#1 greet attempt 1 -> "hello ada"' in rows[2]


def test_history_json_decodes_payloads_in_full(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = run(capsys, "history", "hello-1", "--store", store_url, "--json")
    assert code == 0
    events = json.loads(out)
    assert [e["event_id"] for e in events] == [1, 2, 3, 4]
    assert events[0]["type"] == "WorkflowStarted"
    assert events[0]["args"] == ["ada"]
    assert events[2]["result"] == "hello ada"


def test_timeline_charts_activities_and_timers(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = run(capsys, "timeline", "hello-1", "--store", store_url)
    assert code == 0
    assert out.splitlines()[0].startswith("hello  hello-1  completed in ")
    [row] = [line for line in out.splitlines() if line.startswith("#1 greet ")]
    assert row.split()[2:4] == ["1", "completed"]
    assert row.split("|")[1].startswith("#")

    code, out, _ = run(capsys, "timeline", "nap-1", "--store", store_url)
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("T1 sleep 1d  ")]
    status, started, due, fires = row.split()[4:8]
    # The timer starts as soon as the workflow runs: within a fraction of a second.
    assert (status, due, fires) == ("waiting", "due", "+1d00h")
    assert started.startswith("+0.")
    assert "T1 sleep 1d, fires at +1d00h" in out


def test_timeline_json(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    code, out, _ = run(capsys, "timeline", "doomed-1", "--store", store_url, "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["status"], data["failure"]) == ("failed", "OutOfStock: no stock")


# -- result --------------------------------------------------------------------------------


def test_result_of_a_completed_run_is_json_on_stdout(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, err = run(capsys, "result", "hello-1", "--store", store_url)
    assert (code, json.loads(out), err) == (0, "hello ada", "")


def test_result_of_a_failed_run_exits_3_with_the_failure(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, err = run(capsys, "result", "doomed-1", "--store", store_url)
    assert (code, out) == (3, "")
    assert_one_line_error(err, "failed: OutOfStock: no stock")


def test_result_no_wait_on_a_running_run_exits_4(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, err = run(capsys, "result", "nap-1", "--store", store_url, "--no-wait")
    assert (code, out) == (4, "")
    assert_one_line_error(err, "still running")


def test_result_waits_for_a_run_finished_by_another_worker(
    capsys: pytest.CaptureFixture[str], fresh_url: str
) -> None:
    code, _, _ = run(
        capsys, "start", "napping", "--id", "nap-2", "--arg", "0.2", "--store", fresh_url
    )
    assert code == 0

    async def serve() -> None:
        async with open_client(fresh_url) as client:
            async with open_worker(
                client, task_queue="default", workflows=APP.workflows, activities=APP.activities
            ):
                await client.get_handle("nap-2").result()

    worker = threading.Thread(target=lambda: asyncio.run(serve()))
    worker.start()
    try:
        code, out, _ = run(capsys, "result", "nap-2", "--store", fresh_url)
    finally:
        worker.join(timeout=10)
    assert code == 0
    assert '"rested"' in out.splitlines()


# -- start ---------------------------------------------------------------------------------


def test_start_records_a_run_with_json_arguments(
    capsys: pytest.CaptureFixture[str], fresh_url: str
) -> None:
    code, out, _ = run(
        capsys, "start", "hello", "--id", "h-1", "--arg", '"bob"', "--store", fresh_url, "--json"
    )
    assert code == 0
    started = json.loads(out)
    assert started["workflow_id"] == "h-1"
    _, out, _ = run(capsys, "history", "h-1", "--store", fresh_url, "--json")
    [event] = json.loads(out)
    assert (event["workflow_type"], event["args"], event["task_queue"]) == (
        "hello",
        ["bob"],
        "default",
    )


def test_start_refuses_a_workflow_id_that_is_already_running(
    capsys: pytest.CaptureFixture[str], fresh_url: str
) -> None:
    assert (
        run(capsys, "start", "hello", "--id", "h-1", "--arg", '"a"', "--store", fresh_url)[0] == 0
    )
    code, _, err = run(
        capsys, "start", "hello", "--id", "h-1", "--arg", '"a"', "--store", fresh_url
    )
    assert code == 1
    assert_one_line_error(err, "'h-1' is already running")


def test_start_with_an_argument_that_is_not_json_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fresh_url: str
) -> None:
    code, _, err = run(
        capsys, "start", "hello", "--id", "h-1", "--arg", "bob", "--store", fresh_url
    )
    assert code == 2
    assert "'bob' is not JSON" in err
    assert not Path(fresh_url.removeprefix("sqlite:///")).exists()


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["describe", "history", "timeline", "result"])
def test_unknown_id_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], store_url: str, command: str
) -> None:
    code, out, err = run(capsys, command, "no-such-id", "--store", store_url)
    assert (code, out) == (1, "")
    assert_one_line_error(err, "no workflow or run with id 'no-such-id'")


def test_a_missing_store_file_is_an_error_and_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "typo.db"
    code, _, err = run(capsys, "list", "--store", f"sqlite:///{db}")
    assert code == 1
    assert_one_line_error(err, "does not exist")
    assert not db.exists()


def test_a_file_that_is_not_a_perdura_store_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    for path, fragment in ((other, "not a perdura store"), (garbage, "damaged or not a SQLite")):
        code, _, err = run(capsys, "list", "--store", str(path))
        assert code == 1
        assert_one_line_error(err, fragment)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://db/perdura", "unsupported store URL scheme 'mysql'"),
        ("sqlite://relative.db", "bad store URL"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot reach PostgreSQL"),
    ],
)
def test_a_bad_store_url_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], url: str, fragment: str
) -> None:
    code, _, err = run(capsys, "start", "hello", "--id", "x", "--store", url)
    assert code == 1
    assert_one_line_error(err, fragment)


def test_a_directory_as_store_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "start", "hello", "--id", "x", "--store", str(tmp_path))
    assert code == 1
    assert_one_line_error(err, "is a directory")


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["list", "--limit", "0"], ["list", "--status", "sleeping"], ["describe"]],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: perdura" in err
    assert "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "exit codes" in out


# -- apps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("examples.orders", "write MODULE:ATTRIBUTE"),
        ("examples/orders.py:app", "name a module, not a file"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        ("examples.orders:nope", "has no attribute 'nope'"),
        ("examples.orders:LEDGER_ENV", "no 'workflows' and 'activities' lists"),
    ],
)
def test_worker_with_a_bad_app_spec_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str, fragment: str
) -> None:
    db = tmp_path / "w.db"
    code, _, err = run(capsys, "worker", "--app", spec, "--store", str(db))
    assert code == 1
    assert_one_line_error(err, fragment)
    assert not db.exists()


def test_load_app_finds_the_example_app() -> None:
    app = load_app("examples.orders:app")
    assert [getattr(w, "__name__", None) for w in app.workflows] == ["order"]
    assert len(app.activities) == 4


def test_load_app_names_a_missing_import_inside_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_app_mod.py").write_text("import missing_dependency_xyz\napp = None\n")
    with pytest.raises(AppLoadError, match="No module named 'missing_dependency_xyz'"):
        load_app("broken_app_mod:app", app_dir=str(tmp_path))


def test_load_app_accepts_any_object_with_workflow_and_activity_lists(
    tmp_path: Path,
) -> None:
    (tmp_path / "duck_app_mod.py").write_text(
        "class Holder:\n    class app:\n        workflows = []\n        activities = []\n"
    )
    app: Any = load_app("duck_app_mod:Holder.app", app_dir=str(tmp_path))
    assert app == App()


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their store explicitly unless they test the environment variable."""
    monkeypatch.delenv("PERDURA_STORE", raising=False)


def test_an_empty_workflow_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fresh_url: str
) -> None:
    code, _, err = run(capsys, "start", "hello", "--id", "", "--store", fresh_url)
    assert code == 2
    assert_one_line_error(err, "must not be empty")


def test_an_unexpected_error_is_one_line_unless_debugging(
    capsys: pytest.CaptureFixture[str], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr("engine._cli_runs.build_timeline", broken)
    code, _, err = run(capsys, "timeline", "hello-1", "--store", store_url)
    assert code == 1
    assert_one_line_error(err, "unexpected RuntimeError: renderer bug", "PERDURA_DEBUG=1")
    monkeypatch.setenv("PERDURA_DEBUG", "1")
    with pytest.raises(RuntimeError, match="renderer bug"):
        main(["timeline", "hello-1", "--store", store_url])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list"], "hello-1"),
        (["describe", "nap-1"], "timer T1"),
        (["history", "hello-1"], "ActivityCompleted"),
        (["timeline", "doomed-1"], "OutOfStock: no stock"),
        (["timeline", "hello-1"], "#1 greet"),
        (["result", "hello-1"], '"hello ada"'),
    ],
)
def test_a_terminal_gets_rich_output(
    store_url: str, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    assert main([*argv, "--store", store_url]) == 0
    assert expected in terminal.getvalue()
    if argv[0] != "result":  # a result is JSON for copying, never coloured
        assert "\x1b[" in terminal.getvalue()
