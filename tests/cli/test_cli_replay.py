"""``perdura replay`` in-process: one history (file, workflow id or run id) with its trace and
its mismatch diff, and every stored run of a type with a summary."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import cli_app
import pytest
from cli_support import APP, APP_DIR, Cli

from engine import Client
from engine.cli import main
from sdk import WorkflowFailureError

CHANGED = ["--app", "cli_changed_app:app", "--app-dir", str(APP_DIR)]


def _hello(cli: Cli, *workflow_ids: str) -> None:
    async def run(client: Client) -> None:
        for workflow_id in workflow_ids:
            await client.execute_workflow(cli_app.hello, "ada", id=workflow_id)

    cli.run(run)


def _pipeline(cli: Cli, workflow_id: str) -> None:
    async def run(client: Client) -> None:
        await client.execute_workflow(cli_app.pipeline, "p", id=workflow_id)

    cli.run(run)


# -- one history ---------------------------------------------------------------------------


def test_replaying_a_stored_run_that_matches_exits_0(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "hello-1", *APP)
    assert done.code == 0, done.err
    header, verdict = done.out.splitlines()
    assert header.startswith("replaying hello 'hello-1' (run ")
    assert "4 events) from store sqlite:///" in header
    assert verdict == (
        "ok: 4 events replayed, the code matches the history; the workflow completed"
    )


def test_replay_accepts_a_run_id_and_an_export_file(cli: Cli, tmp_path: Path) -> None:
    _hello(cli, "hello-1")
    run_id = cli("describe", "hello-1", "--json").json()["run_id"]
    assert cli("replay", run_id, *APP).code == 0
    file = tmp_path / "hello.json"
    cli("export", "hello-1", "-o", str(file))
    # A file needs no store at all: the laptop case.
    done = cli("replay", str(file), *APP, "--store", str(tmp_path / "none.db"), store=False)
    assert done.code == 0, done.err
    assert f"from file {file}" in done.out
    assert not (tmp_path / "none.db").exists()


def test_trace_shows_each_event_and_the_commands_the_code_issued(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "hello-1", *APP, "--trace")
    assert done.code == 0, done.err
    lines = [line.strip() for line in done.out.splitlines()[1:-1]]
    assert [re.split(r"\s{2,}", line)[:2] for line in lines] == [
        ["1", "WorkflowStarted"],
        ['-> schedule activity #1 greet("ada")'],
        ["2", "ActivityScheduled"],
        ["3", "ActivityCompleted"],
        ['-> complete -> "HELLO ADA"'],
        ["4", "WorkflowCompleted"],
    ]


def test_trace_json_gives_each_event_with_its_commands(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "hello-1", *APP, "--trace", "--json")
    report = done.json()
    assert (report["outcome"], report["events"], report["state"]) == (
        "ok",
        4,
        "the workflow completed",
    )
    assert [(s["event_id"], [c["kind"] for c in s["commands"]]) for s in report["trace"]] == [
        (1, ["schedule_activity"]),
        (2, []),
        (3, ["complete_workflow"]),
        (4, []),
    ]


def test_a_mismatch_stops_with_the_diff_and_exit_code_3(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "hello-1", *CHANGED, "--trace")
    assert done.code == 3
    lines = done.out.splitlines()
    # The trace stops at the event that revealed the mismatch, then the diff.
    assert lines[1].split()[:2] == ["1", "WorkflowStarted"]
    assert lines[2].strip() == '-> schedule activity #1 wave("ada")'
    assert lines[3].split()[:2] == ["2", "ActivityScheduled"]
    assert lines[4:7] == [
        "MISMATCH at event 2: the code no longer matches the history",
        "  history says: activity 'greet' scheduled as activity #1 (ActivityScheduled)",
        "  code did:     activity #1 is 'wave'",
    ]


def test_a_mismatch_in_json(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "hello-1", *CHANGED, "--json")
    assert done.code == 3
    assert done.json()["outcome"] == "mismatch"
    assert done.json()["mismatch"] == {
        "event_id": 2,
        "recorded": "activity 'greet' scheduled as activity #1 (ActivityScheduled)",
        "produced": "activity #1 is 'wave'",
    }


def test_code_that_raises_during_replay_is_reported_with_its_location(cli: Cli) -> None:
    _pipeline(cli, "p-1")
    done = cli("replay", "p-1", *CHANGED)
    assert done.code == 1
    verdict = done.out.splitlines()[-1]
    assert verdict.startswith("FAILED at event 1: workflow code raised KeyError: 'bug in the new")
    assert re.search(r"cli_changed_app\.py:\d+ in pipeline_with_a_bug\)$", verdict)


def test_replaying_an_open_run_says_what_the_code_waits_on(cli: Cli) -> None:
    cli.run(lambda client: client.start_workflow(cli_app.napping, 3600.0, id="nap-1"))

    async def timer_started(client: Client) -> None:
        async with asyncio.timeout(10):
            while len(await client.get_handle("nap-1").history()) < 2:
                await client.store.wait_for_run("", 0.02)

    cli.run(timer_started)
    done = cli("replay", "nap-1", *APP)
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1].endswith("; it waits on timer T1")


def test_a_workflow_type_the_app_lacks_is_a_one_line_error(cli: Cli) -> None:
    cli.run(lambda client: client.start_workflow(cli_app.napping, 3600.0, id="nap-1"))
    done = cli("replay", "nap-1", *CHANGED)
    assert (done.code, done.out) == (1, "")
    assert "unknown workflow type 'napping'; registered: hello, pipeline" in done.error_line()


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("missing.json", "history file 'missing.json' does not exist"),
        ("some/dir/h", "history file 'some/dir/h' does not exist"),
        ("no-such-run", "no workflow or run with id 'no-such-run'"),
    ],
)
def test_a_target_that_names_nothing_is_a_one_line_error(
    cli: Cli, target: str, fragment: str
) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", target, *APP)
    assert (done.code, done.out) == (1, "")
    assert fragment in done.error_line()


def test_a_file_that_is_not_an_export_is_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1, 2, 3]")
    done = cli("replay", str(bogus), *APP)
    assert done.code == 1
    assert "is not a perdura history export" in done.error_line()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["hello-1", "--all"], "not both"),
        ([], "name one history"),
        (["hello-1", "--type", "hello"], "--type selects runs for --all"),
    ],
)
def test_conflicting_targets_are_usage_errors(cli: Cli, argv: list[str], fragment: str) -> None:
    done = cli("replay", *argv, *APP)
    assert done.code == 2
    assert fragment in done.error_line()


def test_a_bad_app_spec_is_a_one_line_error(cli: Cli) -> None:
    done = cli("replay", "hello-1", "--app", "cli_app:nothing", "--app-dir", str(APP_DIR))
    assert done.code == 1
    assert "has no attribute 'nothing'" in done.error_line()


# -- every run of a type -------------------------------------------------------------------


def test_all_runs_of_a_type_that_match_exit_0_with_a_summary(cli: Cli) -> None:
    _hello(cli, "hello-1", "hello-2")
    _pipeline(cli, "p-1")
    done = cli("replay", "--all", "--type", "hello", *APP)
    assert done.code == 0, done.err
    assert done.out == "replayed 2 runs of hello: 2 ok, 0 mismatched, 0 failed\n"


def test_all_runs_lists_the_mismatched_and_failed_ones_and_exits_3(cli: Cli) -> None:
    _hello(cli, "hello-1", "hello-2")
    _pipeline(cli, "p-1")
    done = cli("replay", "--all", *CHANGED)
    assert done.code == 3
    summary, *details = done.out.splitlines()
    assert summary == "replayed 3 runs: 0 ok, 2 mismatched, 1 failed"
    assert sorted(line.split()[:2] for line in details) == [
        ["failed", "p-1"],
        ["mismatch", "hello-1"],
        ["mismatch", "hello-2"],
    ]
    assert "at event 2: history says activity 'greet'" in details[0]


def test_all_runs_skips_types_the_app_does_not_register(cli: Cli) -> None:
    _hello(cli, "hello-1")
    cli.run(lambda client: client.start_workflow(cli_app.napping, 3600.0, id="nap-1"))
    done = cli("replay", "--all", *CHANGED, "--json")
    report = done.json()
    assert (report["total"], report["skipped"], report["ok"]) == (2, 1, 0)
    assert [m["workflow_id"] for m in report["mismatched"]] == ["hello-1"]
    assert report["failed"] == []


def test_all_runs_of_an_unregistered_type_is_a_one_line_error(cli: Cli) -> None:
    _hello(cli, "hello-1")
    done = cli("replay", "--all", "--type", "napping", *CHANGED)
    assert done.code == 1
    assert "unknown workflow type 'napping'" in done.error_line()


def test_all_runs_of_failed_runs_replay_to_their_failure(cli: Cli) -> None:
    cli_app.broken.add("p:extract")

    async def run(client: Client) -> None:
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(cli_app.pipeline, "p", id="p-1")

    cli.run(run)
    assert cli("replay", "--all", "--type", "pipeline", *APP).code == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_all_runs_on_a_terminal_shows_a_progress_bar(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hello(cli, "hello-1", "hello-2")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("TERM", "xterm-256color")
    code = main(["replay", "--all", "--type", "hello", *APP, "--store", cli.url])
    assert code == 0
    output = terminal.getvalue()
    assert "replaying runs of hello" in output  # the bar's label
    assert "2/2" in output
    assert "\x1b[" in output
    assert "2 ok, 0 mismatched, 0 failed" in output
