"""Durable configuration: the defaults a worker applies, in one typed object.

``PerduraConfig`` is built in code, from ``PERDURA_*`` environment variables, or from a TOML
file (the CLI's ``--config``, or ``$PERDURA_CONFIG``); the environment overrides the file,
and code overrides both by passing its own object. Every value is checked when the object is
made, so a bad setting stops a worker at start with a message naming the field and where the
value came from — never half-way through a run.

A TOML file uses the same names as the object::

    durability = "full"              # store: "full" (survives power loss) or "normal"
    execution_timeout = 86400        # seconds; runs started without one get it
    checkpoint_every = 1             # graph runs: record state every N super-steps

    [retry]                          # activities without a retry policy of their own
    maximum_attempts = 0             # 0 = unlimited
    initial_interval = 1.0
    backoff_coefficient = 2.0
    maximum_interval = 100.0

    [failures]                       # what each failure class does (docs/operating.md)
    resource_exhaustion_backoff = 4.0
    timeout_growth = 2.0
    timeout_limit = 3600.0

    [recovery]                       # automatic recovery of failed runs
    enabled = false
    interval = 60.0
    delay = 30.0
    window = 86400.0
    max_attempts = 3

Environment variables are ``PERDURA_`` plus the upper-cased name, sections joined with
``_``: ``PERDURA_DURABILITY``, ``PERDURA_RETRY_MAXIMUM_ATTEMPTS``,
``PERDURA_RECOVERY_ENABLED`` (``true``/``false``). ``PERDURA_STORE`` is the store URL, as for
the CLI.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from history import Durability, PerduraError, RetryPolicy

__all__ = [
    "CONFIG_FILE_ENV",
    "ConfigError",
    "FailureDefaults",
    "PerduraConfig",
    "RecoveryConfig",
    "RetryDefaults",
]

CONFIG_FILE_ENV: Final = "PERDURA_CONFIG"
_PREFIX: Final = "PERDURA_"

Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
AtLeastOne = Annotated[float, msgspec.Meta(ge=1)]


class ConfigError(PerduraError):
    """A configuration value is invalid; the message names the field and its source."""


def _check(struct: msgspec.Struct, section: str) -> None:
    """Validate every plain field of ``struct`` against its annotated type."""
    for field in msgspec.structs.fields(struct):
        if field.type in _SECTIONS:
            continue
        value = getattr(struct, field.name)
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"invalid perdura configuration: {section}{field.name} = {value!r}: {exc}"
            ) from None


class RetryDefaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The retry policy of activities that set none (neither on the call nor the definition)."""

    maximum_attempts: Annotated[int, msgspec.Meta(ge=0)] = 0
    initial_interval: NonNegative = 1.0
    backoff_coefficient: AtLeastOne = 2.0
    maximum_interval: Seconds | None = None

    section: ClassVar[str] = "retry."

    def __post_init__(self) -> None:
        _check(self, self.section)
        try:
            self.policy()
        except ValueError as exc:
            raise ConfigError(f"invalid perdura configuration: retry: {exc}") from None

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            maximum_attempts=self.maximum_attempts,
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
        )


class FailureDefaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the failure classes do (see ``engine._classify.FailurePolicy``)."""

    resource_exhaustion_backoff: AtLeastOne = 4.0
    timeout_growth: AtLeastOne = 2.0
    timeout_limit: Seconds = 3600.0

    section: ClassVar[str] = "failures."

    def __post_init__(self) -> None:
        _check(self, self.section)


class RecoveryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Automatic recovery of failed runs (``engine._autorecover``).

    A run that FAILED of a recoverable failure (transient or resource exhaustion) is
    recovered once it has been failed for ``delay`` seconds and as long as it failed less
    than ``window`` seconds ago, at most ``max_attempts`` times per workflow id's chain of
    recoveries; the service looks every ``interval`` seconds.
    """

    enabled: bool = False
    interval: Seconds = 60.0
    delay: NonNegative = 30.0
    window: Seconds = 86400.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3

    section: ClassVar[str] = "recovery."

    def __post_init__(self) -> None:
        _check(self, self.section)
        if self.delay >= self.window:
            raise ConfigError(
                f"invalid perdura configuration: recovery.delay ({self.delay}) must be shorter "
                f"than recovery.window ({self.window}), or nothing is ever recovered"
            )


class PerduraConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything an operator sets for perdura, with the defaults a worker applies."""

    store: str | None = None
    """Store URL (``PERDURA_STORE``); the CLI's ``--store`` wins over it."""
    durability: Durability = Durability.FULL
    """SQLite ``synchronous`` level of stores opened with this configuration."""
    execution_timeout: Seconds | None = None
    """Seconds a run started without an execution timeout may take (``None``: unbounded)."""
    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 1
    """Graph runs record their state every this many super-steps."""
    log_format: Literal["console", "json"] | None = None
    """``configure_logging()``'s renderer when not told (``None``: console)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    retry: RetryDefaults = msgspec.field(default_factory=RetryDefaults)
    failures: FailureDefaults = msgspec.field(default_factory=FailureDefaults)
    recovery: RecoveryConfig = msgspec.field(default_factory=RecoveryConfig)

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check(self, self.section)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> PerduraConfig:
        """From the TOML file ``path`` (or ``$PERDURA_CONFIG``, or none), then the
        ``PERDURA_*`` environment on top. Raises :class:`ConfigError` naming what is wrong."""
        env = os.environ if environ is None else environ
        values: dict[str, dict[str, tuple[Any, str]]] = {"": {}}
        file = path if path is not None else env.get(CONFIG_FILE_ENV) or None
        if file is not None:
            _read_toml(Path(file), values)
        _read_env(env, values)
        return _build(values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PerduraConfig:
        """The ``PERDURA_*`` environment (and ``$PERDURA_CONFIG``'s file, if set)."""
        return cls.load(None, environ=environ)


_SECTIONS: Final[dict[Any, str]] = {
    RetryDefaults: "retry",
    FailureDefaults: "failures",
    RecoveryConfig: "recovery",
}
_SECTION_TYPES: Final = {name: kind for kind, name in _SECTIONS.items()}


def _fields(kind: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(kind) if f.type not in _SECTIONS}


def _read_toml(path: Path, values: dict[str, dict[str, tuple[Any, str]]]) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    data = data.get("perdura", data)  # a [perdura] table (e.g. in pyproject.toml) or the top
    source = str(path)
    for key, value in data.items():
        if key in _SECTION_TYPES:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {value!r}")
            section = values.setdefault(key, {})
            for name, item in value.items():
                section[name] = (item, source)
        else:
            values[""][key] = (value, source)


def _read_env(env: Mapping[str, str], values: dict[str, dict[str, tuple[Any, str]]]) -> None:
    for name in _fields(PerduraConfig):
        variable = _PREFIX + name.upper()
        if variable in env:
            values[""][name] = (env[variable], variable)
    for section, kind in _SECTION_TYPES.items():
        for name in _fields(kind):
            variable = f"{_PREFIX}{section.upper()}_{name.upper()}"
            if variable in env:
                values.setdefault(section, {})[name] = (env[variable], variable)


def _convert(kind: type[msgspec.Struct], section: str, given: dict[str, tuple[Any, str]]) -> Any:
    types = _fields(kind)
    prefix = f"{section}." if section else ""
    converted: dict[str, Any] = {}
    for name, (value, source) in given.items():
        if name not in types:
            known = ", ".join(sorted(types) + ([f"[{s}]" for s in _SECTION_TYPES] * (not section)))
            raise ConfigError(
                f"unknown perdura configuration field {prefix}{name} (from {source}); "
                f"known: {known}"
            )
        from_env = isinstance(value, str) and source.startswith(_PREFIX)
        if from_env and value == "" and _accepts_none(types[name]):
            converted[name] = None
            continue
        try:
            converted[name] = msgspec.convert(value, types[name], strict=not from_env)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"invalid perdura configuration: {prefix}{name} = {value!r} (from {source}): {exc}"
            ) from None
    try:
        return kind(**converted)
    except ConfigError as exc:
        sources = sorted({source for _, source in given.values()})
        raise ConfigError(f"{exc} (from {', '.join(sources)})") from None


def _accepts_none(kind: Any) -> bool:
    try:
        msgspec.convert(None, kind)
    except msgspec.ValidationError:
        return False
    return True


def _build(values: dict[str, dict[str, tuple[Any, str]]]) -> PerduraConfig:
    sections = {
        name: _convert(kind, name, values[name])
        for name, kind in _SECTION_TYPES.items()
        if name in values
    }
    top: PerduraConfig = _convert(PerduraConfig, "", values[""])
    return msgspec.structs.replace(top, **sections) if sections else top
