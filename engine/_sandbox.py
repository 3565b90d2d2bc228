"""The workflow sandbox: catch calls whose result would differ on replay.

Workflow code is replayed from history, so everything it learns from the outside world must
come from history too. A workflow that reads the clock, draws a random number, touches a
file or the network, starts a process or a thread would silently diverge on replay; the
sandbox turns those mistakes into a :class:`SandboxViolationError` that names the call and
the ``workflow.*`` replacement, at the call site, the first time the code runs.

It catches *mistakes*; it is not a security boundary (code that wants to escape it can).

Scope: one thread, one step
    Restriction is per thread (a ``threading.local`` flag) and lasts only while
    :func:`restricted` is entered, i.e. while the deterministic loop steps workflow code.
    Activity worker threads, the store's thread (aiosqlite) and every other thread are
    never affected, even while a step runs in the main thread. The runtime's own code that
    must do I/O during a step (logging, encoding) runs inside :func:`unrestricted`.

How each kind of call is caught
    * Module functions (``time.time``, ``random.*``, ``uuid.uuid4``, ``os.urandom``,
      ``secrets.*``, ``threading.Thread.start``) are replaced by a thin wrapper that checks
      the thread-local flag and otherwise calls the original: one Python call of overhead
      outside workflow code.
    * Files, sockets and processes are seen by one process-wide ``sys.addaudithook`` hook
      (audit hooks cannot be removed, so it checks the thread-local flag first and returns).
    * ``datetime.datetime.now()`` and friends are C methods of built-in types, which cannot
      be patched. While a thread is restricted it runs a ``sys.setprofile`` function that
      watches ``'c_call'`` events for them. The same profiler also catches the C-level
      originals of ``time.time``, ``time.sleep``, ``os.urandom`` and of the global random
      generator when workflow code reaches them through a reference taken before
      :func:`install` (``from time import time``), which the module patches cannot see.

Raising from the profiler (measured on CPython 3.11)
    An exception raised by a profile function on ``'c_call'`` does propagate from the call
    site, and the C function is not called, so ``datetime.now()`` raises exactly where it
    is written. But CPython then *uninstalls* the profile function (``profile_trampoline``
    in ``sysmodule.c`` clears it on error), which would blind the sandbox for the rest of
    the step if workflow code caught the error. So the profiler is re-armed:

    * when the raised error object is released (a weak-reference callback), which is the
      moment workflow code has finished handling it, for instance at the end of an
      ``except`` block;
    * at every other sandbox checkpoint in that thread: any other guarded call, a nested
      :func:`restricted`, the end of :func:`unrestricted`;
    * at the next :func:`restricted`, i.e. the next step, at the latest.

    The remaining gap: workflow code that catches the error, *keeps a reference to it* and
    then calls ``datetime.now()`` again in the same step, with no other checkpoint between,
    is not caught the second time. (The first call was.)

Imports are not workflow code
    A lazy ``import`` inside workflow code must work, and the import system reads source
    and bytecode files, lists directories and writes ``.pyc`` files; module bodies may read
    the clock (``logging`` does). Every guard therefore lets a call through while a frame of
    ``importlib._bootstrap`` (the import machinery every import goes through) is on the
    stack. That check walks the stack, but only on the rare path where a guarded call was
    made by restricted code.

Limitations
    * A profile function installed before :func:`restricted` (a debugger's, a Python-level
      profiler's) is suspended while the thread is restricted and restored afterwards.
      C-level profilers such as ``cProfile`` cannot be re-installed through
      ``sys.setprofile`` and are switched off by the first step.
    * Workflow code under the profiler runs slower (one Python call per function call and
      return). The runtime keeps its own code out of it where that is most of a step: the
      worker's loop machinery around the workflow's callbacks, and an activity call, which
      schedules with the profiler paused (:func:`pause`; the audit hook stays on).
    * Clock readings other than the wall clock (``time.monotonic``, ``time.perf_counter``)
      and ``time.localtime()``/``time.gmtime()`` without arguments are not guarded.
    * Callables captured before :func:`install` by ``from x import y`` are only caught when
      they reach one of the C functions above (``from random import randint`` is caught,
      and reported as the generator's ``random.getrandbits()``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import os
import random
import secrets
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from types import BuiltinFunctionType, FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import SandboxViolationError

if TYPE_CHECKING:
    from _typeshed import ProfileFunction

__all__ = ["install", "is_restricted", "restricted", "unrestricted"]

_NOW = "workflow.now()"
_SLEEP = "workflow.sleep() / asyncio.sleep()"
_RANDOM = "workflow.random()"
_UUID = "workflow.uuid4()"
_THREADS = "asyncio.create_task() / workflow.execute_activity()"
_FILES = "an activity (workflow code must not touch files)"
_NETWORK = "an activity (workflow code must not use the network)"
_PROCESSES = "an activity (workflow code must not start processes)"


class _ThreadState(threading.local):
    """Per-thread sandbox state; the class attributes are each new thread's defaults."""

    #: True while this thread runs workflow code (inside restricted(), outside unrestricted()).
    active: bool = False
    #: Whether the profiler (the costly guard for C methods like ``datetime.now``) runs.
    watch_c_calls: bool = True
    #: The profile function that was installed when this thread became restricted.
    outer_profile: ProfileFunction | None = None


_state = _ThreadState()

_install_lock = threading.Lock()
_installed = False

#: Globals of the import machinery: a frame running in them means "an import is under way".
_BOOTSTRAP_GLOBALS = vars(importlib.import_module("importlib._bootstrap"))

#: C functions the profiler stops, by the (hashable) builtin object seen in a 'c_call' event.
#: Bound builtin methods compare and hash by (self, C function), so the temporary bound
#: method CPython builds for a method-descriptor call matches the key built here.
_C_CALLS: dict[object, tuple[str, str]] = {}

#: Names of the clock methods of ``datetime.date`` (and its subclasses) that read the clock.
_CLOCK_METHODS = frozenset({"now", "utcnow", "today"})

#: Weak references to errors raised by the profiler; each re-arms it when its error dies.
_rearm_refs: set[weakref.ref[SandboxViolationError]] = set()


def install() -> None:
    """Install the process-wide hooks: module patches and the audit hook.

    Idempotent and thread-safe. Call it early (the worker does, and :func:`restricted` does
    if needed): the module patches only affect code that looks functions up through their
    module (``time.time()``), not references taken before (``from time import time``).
    """
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        _register_c_calls()
        _patch_modules()
        sys.addaudithook(_audit)
        _installed = True


def is_restricted() -> bool:
    """Whether the current thread is running workflow code right now."""
    return _state.active


@contextlib.contextmanager
def restricted(*, watch_c_calls: bool = True) -> Iterator[None]:
    """Run the body as workflow code: guarded calls in this thread raise.

    Re-entrant. Other threads are unaffected. On exit the thread returns to whatever it
    was before (restricted or not) and its previous profile function is restored, whether
    the body returned or raised.

    ``watch_c_calls=False`` leaves out the profiler that catches ``datetime.now()`` and other
    unpatchable C methods, the one guard with a per-call cost. The runtime does that while
    replaying recorded history: code that reaches such a call does so when it runs live too,
    where it is caught; replay is where speed matters (recovery, cache rebuilds).
    """
    token = enter(watch_c_calls=watch_c_calls)
    try:
        yield
    finally:
        leave(token)


def enter(*, watch_c_calls: bool = True) -> tuple[bool, ProfileFunction | None, bool]:
    """:func:`restricted` without the context manager, for the runtime's hot path: returns
    the token :func:`leave` needs. Always pair them in ``try``/``finally``."""
    if not _installed:
        install()
    state = _state
    token = (state.active, state.outer_profile, state.watch_c_calls)
    if not state.active:
        state.outer_profile = _restorable(sys.getprofile())
    state.active = True
    state.watch_c_calls = watch_c_calls
    _arm()
    return token


def leave(token: tuple[bool, ProfileFunction | None, bool]) -> None:
    state = _state
    was_active, outer, was_watching = token
    state.active = was_active
    state.watch_c_calls = was_watching
    if was_active:
        _arm()
    else:
        sys.setprofile(state.outer_profile)
        state.outer_profile = outer


def pause() -> bool:
    """Stop watching C calls until :func:`resume`, for the runtime's own code that workflow
    code calls on the hot path (an activity call): the profile function would otherwise run
    on each of its calls and returns, which costs more than the code itself. Returns whether
    the watch was on. The audit hook stays; never pause around user code."""
    if sys.getprofile() is _profile:
        sys.setprofile(None)
        return True
    return False


def resume(paused: bool) -> None:
    """Undo :func:`pause` (``paused`` is what it returned)."""
    if paused and _state.active:
        sys.setprofile(_profile)


@contextlib.contextmanager
def unrestricted() -> Iterator[None]:
    """Lift the restriction for the body: for the runtime's own I/O during a step.

    A no-op outside :func:`restricted`. Never use it around user code.
    """
    state = _state
    if not state.active:
        yield
        return
    state.active = False
    sys.setprofile(state.outer_profile)
    try:
        yield
    finally:
        state.active = True
        _arm()


# -- the profiler (C methods that cannot be patched) -------------------------------------------


def _arm() -> None:
    """Make sure this thread's profile function is the sandbox's (see module docstring)."""
    if not _state.watch_c_calls:
        if sys.getprofile() is _profile:
            sys.setprofile(_state.outer_profile)
        return
    if sys.getprofile() is not _profile:
        sys.setprofile(_profile)


def _restorable(profile: ProfileFunction | None) -> ProfileFunction | None:
    """The profile function to put back on exit; ``None`` for one that cannot be put back.

    ``sys.getprofile()`` returns a C profiler's state object (``cProfile.Profile``), which is
    not callable: re-installing it through ``sys.setprofile`` would raise ``TypeError`` from
    every later call in the thread.
    """
    if profile is _profile or not callable(profile):
        return None
    return profile


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    """Stop a guarded C call. Runs on every call and return of workflow code: keep it lean."""
    if event != "c_call":
        return
    try:
        rule = _C_CALLS.get(arg)
    except TypeError:  # an unhashable callable: none of ours
        return
    if rule is None:
        owner = getattr(arg, "__self__", None)
        if not (
            isinstance(owner, type)
            and issubclass(owner, datetime.date)
            and arg.__name__ in _CLOCK_METHODS
        ):
            return
        rule = (f"{owner.__module__}.{owner.__qualname__}.{arg.__name__}()", _NOW)
    if not _state.active or _in_import(frame):
        return
    raise _rearming_error(*rule)


def _rearming_error(call: str, replacement: str) -> SandboxViolationError:
    """The error for the profiler to raise, re-arming the profiler once it is released.

    CPython uninstalls a profile function that raises; the weak reference's callback
    re-installs it when the workflow code is done with the error (see module docstring).
    """
    error = SandboxViolationError(call, replacement)
    owner = threading.get_ident()

    def rearm(ref: weakref.ref[SandboxViolationError]) -> None:
        _rearm_refs.discard(ref)
        if threading.get_ident() == owner and _state.active:
            _arm()

    _rearm_refs.add(weakref.ref(error, rearm))
    return error


def _register_c_calls() -> None:
    rules: dict[object, tuple[str, str]] = {
        datetime.datetime.now: ("datetime.datetime.now()", _NOW),
        datetime.datetime.utcnow: ("datetime.datetime.utcnow()", _NOW),
        datetime.datetime.today: ("datetime.datetime.today()", _NOW),
        datetime.date.today: ("datetime.date.today()", _NOW),
        time.time: ("time.time()", _NOW),
        time.time_ns: ("time.time_ns()", _NOW),
        time.sleep: ("time.sleep()", _SLEEP),
        os.urandom: ("os.urandom()", _RANDOM),
    }
    generator = vars(random)["_inst"]  # the hidden Random behind the module functions
    for name in ("random", "getrandbits"):
        rules[getattr(generator, name)] = (f"random.{name}()", _RANDOM)
    # Only builtins reach the profiler as 'c_call'; on an interpreter where one of these
    # is written in Python it is caught through the module patches instead.
    _C_CALLS.update(
        (function, rule)
        for function, rule in rules.items()
        if isinstance(function, BuiltinFunctionType)
    )


# -- module patches ------------------------------------------------------------------------------


def _patch_modules() -> None:
    for name in ("time", "time_ns"):
        _patch(time, name, f"time.{name}()", _NOW)
    _patch(time, "sleep", "time.sleep()", _SLEEP)
    generator = vars(random)["_inst"]
    for name, value in sorted(vars(random).items()):
        if getattr(value, "__self__", None) is generator:
            _patch(random, name, f"random.{name}()", _RANDOM)
    for name in ("uuid1", "uuid4"):
        _patch(uuid, name, f"uuid.{name}()", _UUID)
    _patch(os, "urandom", "os.urandom()", _RANDOM)
    for name in ("choice", "randbelow", "randbits", "token_bytes", "token_hex", "token_urlsafe"):
        _patch(secrets, name, f"secrets.{name}()", _RANDOM)
    _patch(threading.Thread, "start", "threading.Thread.start()", _THREADS)


def _patch(owner: object, name: str, call: str, replacement: str) -> None:
    setattr(owner, name, _guard(getattr(owner, name), call, replacement))


def _guard(original: Callable[..., Any], call: str, replacement: str) -> Callable[..., Any]:
    """Wrap ``original`` so that it raises in restricted threads; ``__wrapped__`` is it."""

    @functools.wraps(original)
    def guard(*args: Any, **kwargs: Any) -> Any:
        if _state.active:
            _violation(call, replacement, sys._getframe(1))
        return original(*args, **kwargs)

    return guard


def _violation(call: str, replacement: str, frame: FrameType | None) -> None:
    """Raise for a guarded call made by restricted code, unless an import made it."""
    if _in_import(frame):
        return
    _arm()  # a checkpoint: re-arm a profiler uninstalled by an earlier, swallowed error
    raise SandboxViolationError(call, replacement)


def _in_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals is _BOOTSTRAP_GLOBALS:
            return True
        frame = frame.f_back
    return False


# -- the audit hook (files, sockets, processes) ------------------------------------------------


class _AuditRule(NamedTuple):
    call: str
    #: Index of the event argument shown between the parentheses, if any.
    shown: int | None
    replacement: str


_AUDIT_RULES: dict[str, _AuditRule] = {
    # files
    "open": _AuditRule("open", 0, _FILES),
    "os.listdir": _AuditRule("os.listdir", 0, _FILES),
    "os.scandir": _AuditRule("os.scandir", 0, _FILES),
    "os.mkdir": _AuditRule("os.mkdir", 0, _FILES),
    "os.rmdir": _AuditRule("os.rmdir", 0, _FILES),
    "os.remove": _AuditRule("os.remove", 0, _FILES),
    "os.rename": _AuditRule("os.rename", 0, _FILES),
    "os.link": _AuditRule("os.link", 0, _FILES),
    "os.symlink": _AuditRule("os.symlink", 0, _FILES),
    "os.truncate": _AuditRule("os.truncate", 0, _FILES),
    "os.chmod": _AuditRule("os.chmod", 0, _FILES),
    "os.chown": _AuditRule("os.chown", 0, _FILES),
    "os.utime": _AuditRule("os.utime", 0, _FILES),
    "glob.glob": _AuditRule("glob.glob", 0, _FILES),
    "shutil.copyfile": _AuditRule("shutil.copyfile", 0, _FILES),
    "shutil.rmtree": _AuditRule("shutil.rmtree", 0, _FILES),
    "shutil.move": _AuditRule("shutil.move", 0, _FILES),
    "tempfile.mkstemp": _AuditRule("tempfile.mkstemp", 0, _FILES),
    "tempfile.mkdtemp": _AuditRule("tempfile.mkdtemp", 0, _FILES),
    # network
    "socket.connect": _AuditRule("socket.connect", 1, _NETWORK),
    "socket.bind": _AuditRule("socket.bind", 1, _NETWORK),
    "socket.sendto": _AuditRule("socket.sendto", 1, _NETWORK),
    "socket.sendmsg": _AuditRule("socket.sendmsg", 1, _NETWORK),
    "socket.getaddrinfo": _AuditRule("socket.getaddrinfo", 0, _NETWORK),
    "socket.getnameinfo": _AuditRule("socket.getnameinfo", 0, _NETWORK),
    "socket.gethostbyname": _AuditRule("socket.gethostbyname", 0, _NETWORK),
    "socket.gethostbyaddr": _AuditRule("socket.gethostbyaddr", 0, _NETWORK),
    # processes
    "subprocess.Popen": _AuditRule("subprocess.Popen", 1, _PROCESSES),
    "os.system": _AuditRule("os.system", 0, _PROCESSES),
    "os.exec": _AuditRule("os.exec*", 0, _PROCESSES),
    "os.spawn": _AuditRule("os.spawn*", 1, _PROCESSES),
    "os.posix_spawn": _AuditRule("os.posix_spawn", 0, _PROCESSES),
    "os.fork": _AuditRule("os.fork", None, _PROCESSES),
    "os.forkpty": _AuditRule("os.forkpty", None, _PROCESSES),
    "os.startfile": _AuditRule("os.startfile", 0, _PROCESSES),
    "pty.spawn": _AuditRule("pty.spawn", 0, _PROCESSES),
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The process-wide audit hook. It sees every audited event of every thread for the
    life of the process, so the common case (this thread is not restricted) is one check.
    """
    try:
        if not _state.active:
            return
    except Exception:  # thread or interpreter teardown: never break the event
        return
    rule = _AUDIT_RULES.get(event)
    if rule is None:
        return
    shown = "" if rule.shown is None or rule.shown >= len(args) else _brief(args[rule.shown])
    _violation(f"{rule.call}({shown})", rule.replacement, sys._getframe(1))


def _brief(value: object) -> str:
    """A short repr of an event argument; bytes (``os.system`` gets them) shown as text."""
    try:
        text = repr(os.fsdecode(value) if isinstance(value, bytes) else value)
    except Exception:
        return "..."
    return text if len(text) <= 80 else text[:77] + "..."
