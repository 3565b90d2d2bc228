"""Opening a client and a worker: the two context managers most programs start with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from engine import Client, Clock, PerduraConfig, Worker
from history import Durability, PayloadConverter, Store, open_store

__all__ = ["open_client", "open_worker"]


@asynccontextmanager
async def open_client(
    store: str | Path | Store | None = None,
    *,
    durability: Durability | None = None,
    converter: PayloadConverter | None = None,
    clock: Clock | None = None,
    workflows: Iterable[object] = (),
    config: PerduraConfig | None = None,
) -> AsyncIterator[Client]:
    """A client on ``store``: a URL (``sqlite:///app.db``), a path, an open store, or
    ``None`` for ``config.store``, then ``$PERDURA_STORE`` / ``perdura.db``. A store opened
    here is closed on exit. ``workflows`` is the code the client may replay to answer queries.

    ``config`` (default: ``PerduraConfig.from_env()``) gives the defaults: the store's
    durability (unless ``durability`` is given), the execution timeout of new runs, and what
    workers opened with :func:`open_worker` on this client apply.
    """
    config = config if config is not None else PerduraConfig.from_env()
    if store is None or isinstance(store, str | Path):
        opened = await open_store(
            store if store is not None else config.store,
            durability=durability if durability is not None else config.durability,
        )
        try:
            yield Client(
                opened, converter=converter, clock=clock, workflows=workflows, config=config
            )
        finally:
            await opened.close()
    else:
        yield Client(store, converter=converter, clock=clock, workflows=workflows, config=config)


@asynccontextmanager
async def open_worker(
    client: Client,
    *,
    task_queue: str,
    workflows: Iterable[object] = (),
    activities: Iterable[object] = (),
    **options: Any,
) -> AsyncIterator[Worker]:
    """Run a worker in the background for the duration of the block, sharing ``client``'s
    store, clock and converter; runs started through ``client`` reach it without polling.

    ``options`` are :class:`engine.Worker`'s keyword arguments (identity, concurrency,
    lease_seconds, keep_alive …); ``config`` defaults to the client's.
    """
    options.setdefault("config", client.config)
    worker = Worker(
        client.store,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        converter=client.converter,
        clock=client.clock,
        **options,
    )
    client.add_listener(worker)
    try:
        async with worker:
            yield worker
    finally:
        client.remove_listener(worker)
