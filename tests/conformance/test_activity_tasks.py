"""Activity tasks: visibility, claiming by queue, leases, finishing with the result append."""

from __future__ import annotations

from typing import Any

from conformance_support import (
    NOW,
    RESULT,
    T0,
    claim_one,
    event_ids,
    external_append,
    new_run,
    owner_append,
    scheduled,
    task_spec,
)

from history import (
    ActivityCompleted,
    ActivityTaskSpec,
    LeaseLostError,
    Payload,
    RunClaim,
    Store,
)


async def run_with_task(store: Store, *specs: ActivityTaskSpec) -> RunClaim:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=list(specs))).unwrap()
    return run


async def claim_tasks(
    store: Store, owner: str = "act-a", *, now: float = NOW, queue: str = "acts"
) -> list[Any]:
    return await store.claim_activity_tasks(queue, owner=owner, now=now, lease_seconds=10, limit=10)


async def test_an_append_with_activity_tasks_makes_them_claimable(store: Store) -> None:
    await run_with_task(store, task_spec(1))

    [task] = await claim_tasks(store, "act-a", now=NOW)

    assert (task.run_id, task.seq, task.attempt, task.task_queue) == ("run-1", 1, 1, "acts")
    assert task.payload == Payload("json", b'{"seq":1}')
    assert task.lease_expires_at == NOW + 10


async def test_an_activity_task_is_invisible_before_visible_at(store: Store) -> None:
    await run_with_task(store, task_spec(1, visible_at=NOW + 5))

    assert await claim_tasks(store, now=NOW + 4) == []
    assert len(await claim_tasks(store, now=NOW + 5)) == 1


async def test_claim_activity_tasks_only_takes_tasks_of_its_queue(store: Store) -> None:
    await run_with_task(store, task_spec(1, queue="gpu"), task_spec(2))

    assert [t.seq for t in await claim_tasks(store, queue="acts")] == [2]


async def test_claim_activity_tasks_hands_out_the_longest_visible_first(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1, visible_at=NOW), task_spec(2, visible_at=NOW - 9))

    tasks = await store.claim_activity_tasks("acts", owner="a", now=NOW, lease_seconds=10, limit=1)

    assert [t.seq for t in tasks] == [2]


async def test_a_leased_activity_task_is_not_claimed_again_until_its_lease_expires(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1))
    [first] = await claim_tasks(store, "act-a", now=NOW)

    assert await claim_tasks(store, "act-b", now=NOW + 10) == []
    [again] = await claim_tasks(store, "act-b", now=NOW + 10.5)
    assert again.task_id == first.task_id


async def test_finishing_an_activity_task_deletes_it_with_the_result_append(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a")
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    result = await external_append(
        store, "run-1", [done], wake=True, finish_activity_task=(task.task_id, "act-a")
    )

    assert result.error is None
    assert await claim_tasks(store, "act-b", now=NOW + 1000) == []
    assert await event_ids(store, "run-1") == [1, 2, 3]


async def test_finishing_an_activity_task_another_worker_took_over_is_refused(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a", now=NOW)
    await claim_tasks(store, "act-b", now=NOW + 11)
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    result = await external_append(
        store, "run-1", [done], wake=True, finish_activity_task=(task.task_id, "act-a")
    )

    assert isinstance(result.error, LeaseLostError)
    assert f"activity task {task.task_id}" in str(result.error)
    assert await event_ids(store, "run-1") == [1, 2]
    finished_by_b = await external_append(
        store, "run-1", [done], finish_activity_task=(task.task_id, "act-b")
    )
    assert finished_by_b.error is None


async def test_finishing_an_activity_task_twice_is_refused_the_second_time(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a")
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)
    finish = {"finish_activity_task": (task.task_id, "act-a")}

    first = await external_append(store, "run-1", [done], **finish)
    second = await external_append(store, "run-1", [done], **finish)

    assert first.error is None
    assert isinstance(second.error, LeaseLostError)
    assert await event_ids(store, "run-1") == [1, 2, 3]


async def test_renew_activity_tasks_extends_only_tasks_the_owner_still_holds(
    store: Store,
) -> None:
    await run_with_task(store, task_spec(1), task_spec(2))
    tasks = await claim_tasks(store, "act-a", now=NOW)
    [taken] = await store.claim_activity_tasks(
        "acts", owner="act-b", now=NOW + 11, lease_seconds=10, limit=1
    )

    renewed = await store.renew_activity_tasks("act-a", [t.task_id for t in tasks], until=NOW + 100)

    assert renewed == {t.task_id for t in tasks} - {taken.task_id}
