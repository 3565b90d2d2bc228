"""The workflow sandbox: guarded calls raise inside ``restricted()`` and nowhere else."""

from __future__ import annotations

import datetime
import importlib
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import time as wall_clock  # a reference taken before install(): patches miss it
from typing import Any

import pytest

from engine._errors import SandboxViolationError
from engine._sandbox import install, is_restricted, pause, restricted, resume, unrestricted

NOW = "workflow.now()"
SLEEP = "workflow.sleep() / asyncio.sleep()"
RANDOM = "workflow.random()"
UUID = "workflow.uuid4()"
THREADS = "asyncio.create_task() / workflow.execute_activity()"
FILES = "an activity (workflow code must not touch files)"
NETWORK = "an activity (workflow code must not use the network)"
PROCESSES = "an activity (workflow code must not start processes)"


@dataclass
class Env:
    """What the guarded calls of the table act on, set up outside the sandbox."""

    tmp_path: Path
    existing: Path
    server: socket.socket


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    existing = tmp_path / "existing.txt"
    existing.write_text("data")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield Env(tmp_path, existing, server)


def _start_thread(env: Env) -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()


def _scandir(env: Env) -> None:
    with os.scandir(env.tmp_path) as entries:
        list(entries)


def _connect(env: Env) -> None:
    with socket.socket() as client:
        client.connect(env.server.getsockname())


def _bind(env: Env) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))


def _popen(env: Env) -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)


#: (call, the name the error must give, the replacement it must suggest)
GUARDED: list[Any] = [
    pytest.param(lambda env: time.time(), "time.time()", NOW, id="time.time"),
    pytest.param(lambda env: time.time_ns(), "time.time_ns()", NOW, id="time.time_ns"),
    pytest.param(lambda env: time.sleep(0), "time.sleep()", SLEEP, id="time.sleep"),
    pytest.param(
        lambda env: datetime.datetime.now(), "datetime.datetime.now()", NOW, id="datetime.now"
    ),
    pytest.param(
        lambda env: datetime.datetime.now(datetime.UTC),
        "datetime.datetime.now()",
        NOW,
        id="datetime.now(tz)",
    ),
    pytest.param(
        lambda env: datetime.datetime.utcnow(),
        "datetime.datetime.utcnow()",
        NOW,
        id="datetime.utcnow",
    ),
    pytest.param(
        lambda env: datetime.datetime.today(), "datetime.datetime.today()", NOW, id="datetime.today"
    ),
    pytest.param(lambda env: datetime.date.today(), "datetime.date.today()", NOW, id="date.today"),
    pytest.param(lambda env: random.random(), "random.random()", RANDOM, id="random.random"),
    pytest.param(lambda env: random.randint(1, 6), "random.randint()", RANDOM, id="random.randint"),
    pytest.param(
        lambda env: random.randrange(10), "random.randrange()", RANDOM, id="random.randrange"
    ),
    pytest.param(lambda env: random.choice("ab"), "random.choice()", RANDOM, id="random.choice"),
    pytest.param(lambda env: random.choices("ab"), "random.choices()", RANDOM, id="random.choices"),
    pytest.param(
        lambda env: random.shuffle([1, 2]), "random.shuffle()", RANDOM, id="random.shuffle"
    ),
    pytest.param(
        lambda env: random.sample([1, 2], 1), "random.sample()", RANDOM, id="random.sample"
    ),
    pytest.param(lambda env: random.uniform(0, 1), "random.uniform()", RANDOM, id="random.uniform"),
    pytest.param(lambda env: random.gauss(0, 1), "random.gauss()", RANDOM, id="random.gauss"),
    pytest.param(
        lambda env: random.getrandbits(8), "random.getrandbits()", RANDOM, id="random.getrandbits"
    ),
    pytest.param(lambda env: uuid.uuid1(), "uuid.uuid1()", UUID, id="uuid.uuid1"),
    pytest.param(lambda env: uuid.uuid4(), "uuid.uuid4()", UUID, id="uuid.uuid4"),
    pytest.param(lambda env: os.urandom(4), "os.urandom()", RANDOM, id="os.urandom"),
    pytest.param(
        lambda env: secrets.token_hex(), "secrets.token_hex()", RANDOM, id="secrets.token_hex"
    ),
    pytest.param(
        lambda env: secrets.randbelow(10), "secrets.randbelow()", RANDOM, id="secrets.randbelow"
    ),
    pytest.param(_start_thread, "threading.Thread.start()", THREADS, id="Thread.start"),
    pytest.param(lambda env: env.existing.read_text(), "open(", FILES, id="open-read"),
    pytest.param(
        lambda env: (env.tmp_path / "new.txt").write_text("x"), "open(", FILES, id="open-write"
    ),
    pytest.param(lambda env: os.listdir(env.tmp_path), "os.listdir(", FILES, id="os.listdir"),
    pytest.param(_scandir, "os.scandir(", FILES, id="os.scandir"),
    pytest.param(_connect, "socket.connect(", NETWORK, id="socket.connect"),
    pytest.param(_bind, "socket.bind(('127.0.0.1', 0))", NETWORK, id="socket.bind"),
    pytest.param(
        lambda env: socket.getaddrinfo("127.0.0.1", 80),
        "socket.getaddrinfo('127.0.0.1')",
        NETWORK,
        id="socket.getaddrinfo",
    ),
    pytest.param(_popen, "subprocess.Popen(", PROCESSES, id="subprocess.Popen"),
    pytest.param(lambda env: os.system("true"), "os.system('true')", PROCESSES, id="os.system"),
]


def _violation(call: Callable[[], object]) -> SandboxViolationError:
    with restricted(), pytest.raises(SandboxViolationError) as excinfo:
        call()
    return excinfo.value


@pytest.mark.parametrize(("call", "name", "replacement"), GUARDED)
def test_guarded_call_raises_inside_restricted_naming_the_call_and_its_replacement(
    env: Env, call: Callable[[Env], object], name: str, replacement: str
) -> None:
    error = _violation(lambda: call(env))

    assert error.call.startswith(name)
    assert error.replacement == replacement
    assert name in str(error)


@pytest.mark.parametrize(("call", "name", "replacement"), GUARDED)
def test_guarded_call_works_outside_restricted(
    env: Env, call: Callable[[Env], object], name: str, replacement: str
) -> None:
    install()

    call(env)


@pytest.mark.parametrize(("call", "name", "replacement"), GUARDED)
def test_guarded_call_works_in_another_thread_while_this_one_is_restricted(
    env: Env, call: Callable[[Env], object], name: str, replacement: str
) -> None:
    go, done = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def worker() -> None:
        go.wait()
        try:
            call(env)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with restricted():
        go.set()
        finished = done.wait(timeout=10)
        still_restricted = is_restricted()
    thread.join()

    assert finished
    assert still_restricted
    assert outcome == [None]


def test_error_message_says_why_and_what_to_use_instead() -> None:
    error = _violation(time.time)

    assert str(error) == (
        "time.time() is not allowed inside workflow code (it would differ on replay); "
        "use workflow.now()"
    )


def test_is_restricted_only_inside_restricted() -> None:
    before = is_restricted()
    with restricted():
        inside = is_restricted()
    after = is_restricted()

    assert (before, inside, after) == (False, True, False)


def test_nested_restricted_stays_restricted_after_the_inner_block() -> None:
    with restricted():
        with restricted():
            pass
        still_restricted = is_restricted()
        with pytest.raises(SandboxViolationError):
            datetime.datetime.now()

    assert still_restricted
    assert not is_restricted()


def test_unrestricted_lifts_the_restriction_for_its_body() -> None:
    with restricted(), unrestricted():
        lifted = not is_restricted()
        time.time()
        datetime.datetime.now()
        random.random()

    assert lifted


def test_restriction_returns_after_unrestricted() -> None:
    with restricted():
        with unrestricted():
            pass
        with pytest.raises(SandboxViolationError, match=r"datetime\.date\.today\(\)"):
            datetime.date.today()


def test_unrestricted_outside_restricted_changes_nothing() -> None:
    with unrestricted():
        inside = is_restricted()
    time.time()

    assert not inside
    assert not is_restricted()


def test_restricted_inside_unrestricted_restricts_again() -> None:
    with restricted(), unrestricted(), restricted():
        with pytest.raises(SandboxViolationError):
            datetime.datetime.now()
        assert is_restricted()


def test_lazy_import_of_a_not_yet_imported_stdlib_module_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)

    with restricted():
        colorsys = importlib.import_module("colorsys")

    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)


def test_module_body_of_a_lazy_import_is_not_workflow_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "perdura_sandbox_probe.py").write_text(
        "import datetime, time\n"
        "LOADED_AT = time.time()\n"
        "TODAY = datetime.date.today()\n"
        "with open(__file__) as source:\n"
        "    SOURCE = source.read()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "perdura_sandbox_probe", raising=False)

    with restricted():
        import perdura_sandbox_probe  # type: ignore[import-not-found]

    assert perdura_sandbox_probe.LOADED_AT > 0
    assert "LOADED_AT" in perdura_sandbox_probe.SOURCE


def test_seeded_random_instance_works_inside_restricted() -> None:
    expected = random.Random(5).random()

    with restricted():
        drawn = random.Random(5).random()

    assert drawn == expected


def test_install_is_idempotent() -> None:
    install()
    install()
    install()

    assert isinstance(time.time.__wrapped__, types.BuiltinFunctionType)  # type: ignore[attr-defined]
    assert not hasattr(threading.Thread.start.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]
    assert _violation(time.time).call == "time.time()"


def test_restriction_does_not_leak_after_an_exception_inside_restricted() -> None:
    profile_before = sys.getprofile()

    with pytest.raises(ZeroDivisionError), restricted():
        _ = 1 / 0

    assert not is_restricted()
    assert sys.getprofile() is profile_before
    time.time()
    datetime.datetime.now()


def test_previous_profile_function_is_restored_on_exit() -> None:
    events: list[str] = []

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        events.append(event)

    sys.setprofile(profile)
    try:
        with restricted():
            pass
        restored = sys.getprofile()
    finally:
        sys.setprofile(None)

    assert restored is profile


def test_pause_lifts_the_c_call_watch_until_resume() -> None:
    with restricted():
        paused = pause()
        during = wall_clock()
        resume(paused)
        with pytest.raises(SandboxViolationError, match=r"time\.time\(\)"):
            wall_clock()

    assert paused
    assert during > 0


def test_pause_outside_restricted_leaves_the_profile_function_alone() -> None:
    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        pass

    sys.setprofile(profile)
    try:
        paused = pause()
        during = sys.getprofile()
        resume(paused)
        after = sys.getprofile()
    finally:
        sys.setprofile(None)

    assert not paused
    assert during is profile
    assert after is profile


def test_datetime_guard_is_rearmed_after_workflow_code_swallows_a_violation() -> None:
    caught: list[str] = []

    with restricted():
        for _ in range(2):
            try:
                datetime.datetime.now()
            except SandboxViolationError as error:
                caught.append(error.call)

    assert caught == ["datetime.datetime.now()", "datetime.datetime.now()"]


def test_datetime_subclass_clock_is_caught() -> None:
    class Moment(datetime.datetime):
        pass

    error = _violation(Moment.now)

    assert error.call.endswith("Moment.now()")
    assert error.replacement == NOW


def test_function_captured_before_install_is_caught() -> None:
    error = _violation(wall_clock)

    assert error.call == "time.time()"
