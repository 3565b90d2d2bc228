"""``perdura`` as real processes, where the terminal, stdin, pipes, signals or exit codes are
the point: a debugger session inside a replay, ``export | import``, rich output on a
pseudo-terminal, and ``perdura server``."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_app
import httpx
import pytest
from cli_support import APP, APP_DIR, ROOT, Cli, perdura_process

from engine import Client

pytestmark = pytest.mark.slow

DEBUG_APP = ["--app", "cli_debug_app:app", "--app-dir", str(APP_DIR)]


def _hello(cli: Cli, workflow_id: str = "hello-1") -> None:
    async def run(client: Client) -> None:
        await client.execute_workflow(cli_app.hello, "ada", id=workflow_id)

    cli.run(run)


# -- breakpoint() during a replay ----------------------------------------------------------


def test_breakpoint_in_workflow_code_opens_pdb_during_a_replay(cli: Cli) -> None:
    _hello(cli)
    done = perdura_process(
        "replay",
        "hello-1",
        *DEBUG_APP,
        "--trace",
        "--store",
        cli.url,
        input="p shout\np greeting\nc\n",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The debugger stops at the breakpoint with the workflow's locals as replay rebuilt them.
    assert "cli_debug_app.py" in out
    assert "'HELLO ADA'" in out
    assert "'hello ada'" in out
    # It stops under the event that woke the code (the greeting's completion), and the
    # replay carries on after `c` to its verdict.
    assert out.index("ActivityCompleted") < out.index("(Pdb)") < out.index("WorkflowCompleted")
    assert out.splitlines()[-1].startswith("ok: 4 events replayed")
    assert done.stderr == ""


def test_quitting_the_debugger_stops_the_replay_with_exit_130(cli: Cli) -> None:
    _hello(cli)
    done = perdura_process("replay", "hello-1", *DEBUG_APP, "--store", cli.url, input="q\n")
    assert done.returncode == 130
    assert done.stderr.splitlines() == [
        "perdura: error: replay stopped at event 3: quit from the debugger"
    ]


def test_a_mismatch_exits_3_from_a_real_process(cli: Cli) -> None:
    _hello(cli)
    changed = ["--app", "cli_changed_app:app", "--app-dir", str(APP_DIR)]
    done = perdura_process("replay", "hello-1", *changed, "--store", cli.url)
    assert done.returncode == 3
    assert "MISMATCH at event 2" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


# -- pipes ---------------------------------------------------------------------------------


def test_export_piped_into_import_copies_a_run_between_stores(cli: Cli, tmp_path: Path) -> None:
    _hello(cli)
    laptop = f"sqlite:///{tmp_path / 'laptop.db'}"
    exporter = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "export", "hello-1", "--store", cli.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    importer = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "-", "--store", laptop, "--json"],
        cwd=ROOT,
        stdin=exporter.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exporter.wait(timeout=60) == 0
    assert importer.returncode == 0, importer.stderr
    assert json.loads(importer.stdout)["workflow_id"] == "hello-1"
    replayed = perdura_process("replay", "hello-1", *APP, "--store", laptop)
    assert replayed.returncode == 0, replayed.stderr


# -- a terminal ----------------------------------------------------------------------------


def _in_a_terminal(*argv: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``perdura ARGV`` with a pseudo-terminal as stdout and stderr."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_colour_and_a_pipe_gets_plain_text(cli: Cli) -> None:
    _hello(cli)
    code, screen = _in_a_terminal("list", "--store", cli.url)
    assert code == 0
    assert "\x1b[" in screen
    assert "hello-1" in screen
    piped = perdura_process("list", "--store", cli.url)
    assert piped.returncode == 0
    assert "\x1b[" not in piped.stdout
    assert piped.stdout.split()[:3] == ["WORKFLOW", "ID", "TYPE"]


def test_replaying_every_run_on_a_terminal_draws_a_progress_bar(cli: Cli) -> None:
    _hello(cli, "hello-1")
    _hello(cli, "hello-2")
    code, screen = _in_a_terminal("replay", "--all", "--type", "hello", *APP, "--store", cli.url)
    assert code == 0, screen
    assert "replaying runs of hello" in screen
    assert "2/2" in screen
    assert "replayed 2 runs of hello: 2 ok, 0 mismatched, 0 failed" in screen


# -- perdura server ------------------------------------------------------------------------


def test_server_serves_the_api_and_runs_workflows_until_sigterm(cli: Cli) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "server",
            "--port",
            "0",
            *APP,
            "--store",
            cli.url,
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        assert ready["ui"] == ready["url"] + "/ui/"
        assert len(ready["workers"]) == 1
        health = httpx.get(ready["url"] + "/healthz", timeout=10)
        assert health.status_code == 200

        started = perdura_process(
            "start", "hello", "--id", "h-srv", "--arg", '"bob"', "--store", cli.url
        )
        assert started.returncode == 0, started.stderr
        result = perdura_process("result", "h-srv", "--store", cli.url)
        assert (result.returncode, result.stdout) == (0, '"HELLO BOB"\n')
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=20)
        stderr = server.stderr.read() if server.stderr else ""
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_server_refuses_a_public_address_without_a_token(cli: Cli) -> None:
    done = perdura_process("server", "--host", "0.0.0.0", "--port", "0", "--store", cli.url)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("perdura: error: refusing to listen on 0.0.0.0 without a token")
