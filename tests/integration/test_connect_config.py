"""``open_client(config=...)``: the configuration reaches the store, new runs and workers."""

from __future__ import annotations

from pathlib import Path

from engine import PerduraConfig
from history import Durability, SqliteStore
from sdk import open_client, open_worker, workflow


@workflow.defn
async def nothing() -> None:
    return None


async def test_the_configured_durability_opens_the_store(tmp_path: Path) -> None:
    config = PerduraConfig(durability=Durability.NORMAL)
    async with open_client(tmp_path / "a.db", config=config) as client:
        assert isinstance(client.store, SqliteStore)
        assert client.store.durability is Durability.NORMAL


async def test_an_explicit_durability_wins_over_the_configuration(tmp_path: Path) -> None:
    config = PerduraConfig(durability=Durability.NORMAL)
    async with open_client(tmp_path / "b.db", config=config, durability=Durability.FULL) as client:
        assert isinstance(client.store, SqliteStore)
        assert client.store.durability is Durability.FULL


async def test_the_configured_store_is_used_when_none_is_named(tmp_path: Path) -> None:
    config = PerduraConfig(store=f"sqlite:///{tmp_path / 'configured.db'}")
    async with open_client(config=config) as client:
        assert isinstance(client.store, SqliteStore)
        assert client.store.path == tmp_path / "configured.db"


async def test_a_worker_opened_on_the_client_shares_its_configuration(tmp_path: Path) -> None:
    config = PerduraConfig(checkpoint_every=3)
    async with open_client(tmp_path / "c.db", config=config) as client:
        async with open_worker(client, task_queue="q", workflows=[nothing]) as worker:
            assert worker.config is config
