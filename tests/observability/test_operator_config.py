"""Durable configuration: one typed object from code, ``PERDURA_*`` variables or a TOML file;
bad values stop a worker at start with a message naming the field and its source."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from obs_support import WAIT

from engine import Client, ConfigError, PerduraConfig, RecoveryConfig, RetryDefaults, Worker
from history import ActivityFailed, Durability, RetryPolicy, SqliteStore, WorkflowStarted
from sdk import WorkflowFailureError, activity, open_client, open_worker, workflow

QUEUE = "config"


def test_defaults_are_temporals_retry_policy_full_durability_and_no_recovery() -> None:
    config = PerduraConfig.load(environ={})
    assert config.retry.policy() == RetryPolicy()
    assert config.durability is Durability.FULL
    assert config.recovery.enabled is False
    assert config.execution_timeout is None
    assert config.checkpoint_every == 1


def test_environment_variables_set_nested_fields() -> None:
    config = PerduraConfig.load(
        environ={
            "PERDURA_RETRY_MAXIMUM_ATTEMPTS": "5",
            "PERDURA_RETRY_INITIAL_INTERVAL": "0.5",
            "PERDURA_DURABILITY": "normal",
            "PERDURA_RECOVERY_ENABLED": "true",
            "PERDURA_RECOVERY_MAX_ATTEMPTS": "7",
            "PERDURA_EXECUTION_TIMEOUT": "3600",
            "PERDURA_CHECKPOINT_EVERY": "10",
        }
    )
    assert (config.retry.maximum_attempts, config.retry.initial_interval) == (5, 0.5)
    assert config.durability is Durability.NORMAL
    assert (config.recovery.enabled, config.recovery.max_attempts) == (True, 7)
    assert config.execution_timeout == 3600.0
    assert config.checkpoint_every == 10


def test_a_toml_file_is_read_and_the_environment_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "perdura.toml"
    path.write_text(
        'durability = "normal"\n'
        "[retry]\nmaximum_attempts = 3\nbackoff_coefficient = 3.0\n"
        "[recovery]\nenabled = true\ninterval = 15\n",
        encoding="utf-8",
    )
    config = PerduraConfig.load(path, environ={"PERDURA_RETRY_MAXIMUM_ATTEMPTS": "9"})
    assert config.durability is Durability.NORMAL
    assert (config.retry.maximum_attempts, config.retry.backoff_coefficient) == (9, 3.0)
    assert (config.recovery.enabled, config.recovery.interval) == (True, 15.0)


def test_the_file_may_be_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "ops.toml"
    path.write_text("[perdura]\nexecution_timeout = 60\n", encoding="utf-8")
    config = PerduraConfig.from_env({"PERDURA_CONFIG": str(path)})
    assert config.execution_timeout == 60.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PERDURA_RETRY_BACKOFF_COEFFICIENT": "0.5"},
            r"retry\.backoff_coefficient = '0\.5' \(from PERDURA_RETRY_BACKOFF_COEFFICIENT\)"
            r": Expected `float` >= 1",
        ),
        (
            {"PERDURA_RECOVERY_ENABLED": "maybe"},
            r"recovery\.enabled = 'maybe' \(from PERDURA_RECOVERY_ENABLED\): Expected `bool`",
        ),
        ({"PERDURA_DURABILITY": "sometimes"}, r"durability = 'sometimes'.*Invalid enum value"),
        ({"PERDURA_EXECUTION_TIMEOUT": "-1"}, r"execution_timeout = '-1'.*Expected `float` > 0"),
        (
            {"PERDURA_RETRY_INITIAL_INTERVAL": "10", "PERDURA_RETRY_MAXIMUM_INTERVAL": "5"},
            r"retry: RetryPolicy\.maximum_interval must be >= initial_interval.*"
            r"PERDURA_RETRY_INITIAL_INTERVAL",
        ),
        (
            {"PERDURA_RECOVERY_DELAY": "90", "PERDURA_RECOVERY_WINDOW": "60"},
            r"recovery\.delay \(90\.0\) must be shorter than recovery\.window",
        ),
    ],
)
def test_an_invalid_value_is_refused_naming_the_field_and_its_source(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PerduraConfig.load(environ=environ)


def test_an_unknown_field_in_the_file_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "perdura.toml"
    path.write_text("[retry]\nmax_attempts = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown perdura configuration field retry\.max_"):
        PerduraConfig.load(path, environ={})


def test_a_missing_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'/nowhere/perdura\.toml' does not exist"):
        PerduraConfig.load("/nowhere/perdura.toml", environ={})


def test_a_value_set_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"recovery\.max_attempts = 0: Expected `int` >= 1"):
        RecoveryConfig(max_attempts=0)


async def test_a_worker_refuses_to_start_on_a_bad_environment(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURA_RETRY_MAXIMUM_ATTEMPTS", "-2")
    store = await SqliteStore.open(db_path)
    try:
        with pytest.raises(ConfigError, match=r"retry\.maximum_attempts = '-2'"):
            Worker(store, task_queue=QUEUE)
    finally:
        await store.close()


async def test_a_worker_applies_the_default_retry_policy_to_activities_without_one(
    db_path: Path,
) -> None:
    @activity.defn
    async def flaky(n: int) -> int:
        raise ConnectionResetError("reset")

    @workflow.defn
    async def job(n: int) -> int:
        return await flaky(n)

    config = PerduraConfig(retry=RetryDefaults(maximum_attempts=3, initial_interval=0.01))
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[job], activities=[flaky], config=config
        ):
            handle = await client.start_workflow(job, 1, id="job-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowFailureError):
                    await handle.result()
        history = await handle.history()

    attempts = [e.attempt for e in history if isinstance(e, ActivityFailed)]
    assert attempts == [1, 2, 3]


async def test_runs_started_without_an_execution_timeout_get_the_configured_one(
    db_path: Path,
) -> None:
    @workflow.defn
    async def idle() -> None:
        await workflow.sleep(10)

    async with open_client(db_path) as opened:
        client = Client(opened.store, config=PerduraConfig(execution_timeout=60))
        default = await client.start_workflow(idle, id="idle-1", task_queue=QUEUE)
        own = await client.start_workflow(idle, id="idle-2", task_queue=QUEUE, execution_timeout=5)
        deadlines = []
        for handle in (default, own):
            started = (await handle.history())[0]
            assert isinstance(started, WorkflowStarted)
            assert started.execution_deadline is not None
            deadlines.append((started.execution_deadline - started.timestamp).total_seconds())

    assert deadlines == [60.0, 5.0]
