"""Apps: what ``perdura worker --app module:attr`` loads.

An app is nothing more than the workflows and activities one worker process registers. The CLI
names it the way ASGI servers name theirs (``package.module:attribute``), so a deployment
points a worker at user code without writing a launcher script. Loading accepts any object
with ``workflows`` and ``activities`` attributes, not only :class:`App`: the CLI may run as
``python -m engine.cli``, where a second copy of this module's classes can exist, and an
``isinstance`` check would then reject a perfectly good app.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

from history import PerduraError

__all__ = ["App", "AppLoadError", "load_app"]


@dataclass(frozen=True, kw_only=True)
class App:
    """The workflows and activities a worker serves, e.g.
    ``app = App(workflows=[order], activities=[charge, ship])``."""

    workflows: Sequence[object] = field(default_factory=tuple)
    activities: Sequence[object] = field(default_factory=tuple)


class AppLoadError(PerduraError):
    """An ``--app`` spec that names no usable app; the message says which part is wrong."""


def load_app(spec: str, *, app_dir: str | None = None) -> App:
    """Import ``"package.module:attribute"`` and return it as an :class:`App`.

    ``app_dir`` (default: the current directory) is put first on ``sys.path``: the ``perdura``
    console script runs with its own ``bin/`` directory there, not the directory the user is
    in, so ``perdura worker --app myapp:app`` would otherwise not find ``myapp.py``.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise AppLoadError(
            f"bad app spec {spec!r}: write MODULE:ATTRIBUTE, e.g. examples.orders:app"
        )
    if module_name.endswith(".py") or "/" in module_name:
        raise AppLoadError(
            f"bad app spec {spec!r}: name a module, not a file (e.g. examples.orders:app "
            "for examples/orders.py)"
        )
    directory = os.path.abspath(app_dir if app_dir is not None else os.getcwd())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing *app* module is a spec error; a missing import inside it is a bug
        # in the app, and the message must say which module is absent.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise AppLoadError(
                f"cannot load app {spec!r}: no module named {module_name!r} "
                f"(searched {directory} and the installed packages)"
            ) from exc
        raise AppLoadError(
            f"cannot load app {spec!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise AppLoadError(
            f"cannot load app {spec!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(
                f"cannot load app {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    workflows = getattr(target, "workflows", None)
    activities = getattr(target, "activities", None)
    if _is_sequence(workflows) and _is_sequence(activities):
        return App(workflows=tuple(workflows), activities=tuple(activities))
    raise AppLoadError(
        f"cannot load app {spec!r}: {type(target).__name__} object has no 'workflows' and "
        "'activities' lists; define app = App(workflows=[...], activities=[...])"
    )


def _is_sequence(value: object) -> TypeGuard[Sequence[object]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)
