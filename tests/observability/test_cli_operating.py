"""The ``perdura`` command's share of operating: ``describe`` shows failure classes, and the
worker refuses a bad configuration file before it starts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from obs_support import WAIT

from engine.cli import main
from sdk import RetryPolicy, WorkflowFailureError, activity, open_client, open_worker, workflow

QUEUE = "cli"


@activity.defn(name="upload")
async def upload(path: str) -> str:
    raise PermissionError(f"bucket denies writing {path}")


@workflow.defn(name="backup")
async def backup(path: str) -> str:
    return await workflow.execute_activity(upload, path, retry_policy=RetryPolicy())


async def _failed_run(db_path: Path) -> None:
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[backup], activities=[upload]):
            handle = await client.start_workflow(backup, "/etc", id="backup-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowFailureError):
                    await handle.result()


async def test_describe_prints_the_failure_class_of_a_failed_run(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _failed_run(db_path)
    capsys.readouterr()

    code = await asyncio.to_thread(main, ["describe", "backup-1", "--store", str(db_path)])
    text = capsys.readouterr().out
    code_json = await asyncio.to_thread(
        main, ["describe", "backup-1", "--store", str(db_path), "--json"]
    )
    data = json.loads(capsys.readouterr().out)

    assert (code, code_json) == (0, 0)
    assert "failure class" in text
    assert "permanent" in text
    assert data["failure_class"] == "permanent"


def test_the_worker_refuses_a_bad_configuration_file_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "perdura.toml"
    config.write_text("[recovery]\nenabled = true\nmax_attempts = 0\n", encoding="utf-8")
    store = tmp_path / "never.db"

    code = main(
        [
            "worker",
            "--app",
            "examples.orders:app",
            "--store",
            str(store),
            "--config",
            str(config),
        ]
    )

    assert code == 1
    error = capsys.readouterr().err
    assert "recovery.max_attempts = 0" in error
    assert str(config) in error
    assert not store.exists()  # refused before anything was opened
