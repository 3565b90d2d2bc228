"""Graph state: which keys it has, what type each holds, and how updates to a key merge.

Inside the runner the state is kept in *builtins form*: a ``dict`` of plain JSON-like values
(``msgspec.to_builtins``). That is what history records after every super-step, what a node
activity receives as its argument and what a fork starts from, so a recorded state reads the
same with or without the code. Nodes and routers get the *typed* view (the msgspec Struct or
TypedDict the graph was declared with), built from the builtins form on the way in.

Merge strategies (the original design's ``KeyStrategy``) say how a node's partial update to
one key combines with the value the key already holds: :data:`replace` (the default),
:data:`append` (list concatenation; a single item is appended), :data:`merge` (dict union, the
update winning) or :func:`reducer` with any two-argument function. Declare them in the
schema's annotations, ``items: Annotated[list[Item], append]`` (a bare callable in
``Annotated`` is taken as a reducer, as LangGraph's ``operator.add`` convention), or pass
``strategies={"items": append}`` to :class:`~sdk.graph.StateGraph`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from ._errors import InvalidUpdateError

__all__ = [
    "KeyStrategy",
    "Reducer",
    "StateSpec",
    "append",
    "merge",
    "reducer",
    "replace",
]

_MISSING: Final = object()


class KeyStrategy:
    """How an update to one state key combines with the value it holds.

    Subclass and implement :meth:`combine` (on builtins-form values) for a strategy of your
    own, or use :func:`reducer` for a plain function. ``name`` is what rendering shows.
    """

    name: str = "custom"

    def combine(self, current: Any, update: Any, *, key: str, value_type: Any) -> Any:
        """The key's new value; ``current`` is ``_MISSING``-free (the key's absence reads as
        ``None``). Values are in builtins form; the result must be too."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<KeyStrategy {self.name}>"


class _Replace(KeyStrategy):
    name = "replace"

    def combine(self, current: Any, update: Any, *, key: str, value_type: Any) -> Any:
        return update


class _Append(KeyStrategy):
    name = "append"

    def combine(self, current: Any, update: Any, *, key: str, value_type: Any) -> Any:
        if current is None:
            current = []
        if not isinstance(current, list):
            raise InvalidUpdateError(
                f"state key {key!r} uses the append strategy but holds a "
                f"{type(current).__name__}, not a list"
            )
        if isinstance(update, list | tuple):
            return [*current, *update]
        return [*current, update]


class _Merge(KeyStrategy):
    name = "merge"

    def combine(self, current: Any, update: Any, *, key: str, value_type: Any) -> Any:
        if current is None:
            current = {}
        if not isinstance(current, dict) or not isinstance(update, dict):
            got = type(update if isinstance(current, dict) else current).__name__
            raise InvalidUpdateError(
                f"state key {key!r} uses the merge strategy (dict union) but got a {got}"
            )
        return {**current, **update}


class Reducer(KeyStrategy):
    """A strategy from a function ``fn(current, update) -> new``.

    ``fn`` sees typed values (converted to the key's annotation where that works) and runs
    inside workflow code on every replay: it must be a pure function of its arguments.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a reducer must be a function of (current, update), got {fn!r}")
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "reducer"))

    def combine(self, current: Any, update: Any, *, key: str, value_type: Any) -> Any:
        typed_current = _typed(current, value_type)
        typed_update = _typed(update, value_type)
        return msgspec.to_builtins(self.fn(typed_current, typed_update))


replace: Final[KeyStrategy] = _Replace()
"""The default: the update replaces the value. Two updates to one key in the same super-step
are an error (which one should win is not a question the order of branches should answer)."""
append: Final[KeyStrategy] = _Append()
"""List concatenation: a list update is concatenated, any other value appended as one item."""
merge: Final[KeyStrategy] = _Merge()
"""Dict union: the update's entries are added, replacing entries with the same key."""


def reducer(fn: Callable[[Any, Any], Any], *, name: str | None = None) -> Reducer:
    """A merge strategy from ``fn(current, update) -> new`` (see :class:`Reducer`)."""
    return Reducer(fn, name)


def _typed(value: Any, value_type: Any) -> Any:
    if value is None or value_type is Any:
        return value
    try:
        return msgspec.convert(value, value_type, strict=False)
    except (msgspec.ValidationError, TypeError):
        return value


def _strategy_from(metadata: tuple[Any, ...], key: str) -> KeyStrategy | None:
    found: KeyStrategy | None = None
    for item in metadata:
        if isinstance(item, KeyStrategy):
            found = item
        elif callable(item) and not isinstance(item, type):
            found = Reducer(item)
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateSpec:
    """The state of one graph: keys, their types and strategies, and the schema's kind.

    ``kind`` is ``"struct"`` (a msgspec Struct: every field is a key, fields without a
    default must be in the input), ``"typeddict"`` (keys may be absent until written) or
    ``"dict"`` (any key; types unknown).
    """

    schema: Any
    kind: str
    types: Mapping[str, Any]
    strategies: Mapping[str, KeyStrategy]
    defaults: Mapping[str, Callable[[], Any]]
    required: frozenset[str]

    @classmethod
    def build(cls, schema: Any, strategies: Mapping[str, KeyStrategy] | None) -> StateSpec:
        overrides = dict(strategies or {})
        for key, strategy in overrides.items():
            if not isinstance(strategy, KeyStrategy):
                raise TypeError(
                    f"strategy for state key {key!r} must be a KeyStrategy (replace, append, "
                    f"merge or reducer(fn)), got {strategy!r}"
                )
        if schema is None or schema is dict:
            return cls(
                schema=None,
                kind="dict",
                types={},
                strategies=overrides,
                defaults={},
                required=frozenset(),
            )
        if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
            kind = "struct"
        elif typing.is_typeddict(schema):
            kind = "typeddict"
        else:
            raise TypeError(
                f"state schema must be a msgspec Struct, a TypedDict, or None/dict for a plain "
                f"dict state, got {schema!r}"
            )
        hints = typing.get_type_hints(schema, include_extras=True)
        types: dict[str, Any] = {}
        found: dict[str, KeyStrategy] = {}
        for key, hint in hints.items():
            if key.startswith("_"):
                continue
            if typing.get_origin(hint) is typing.Annotated:
                base, *metadata = typing.get_args(hint)
                declared = _strategy_from(tuple(metadata), key)
                if declared is not None:
                    found[key] = declared
                types[key] = base
            else:
                types[key] = hint
        for key in overrides:
            if key not in types:
                raise ValueError(
                    f"strategy given for {key!r}, which is not a key of state "
                    f"{schema.__qualname__} (keys: {', '.join(types)})"
                )
        found.update(overrides)
        defaults: dict[str, Callable[[], Any]] = {}
        required: set[str] = set()
        if kind == "struct":
            for info in msgspec.structs.fields(schema):
                if info.default is not msgspec.NODEFAULT:
                    defaults[info.name] = _constant(info.default)
                elif info.default_factory is not msgspec.NODEFAULT:
                    defaults[info.name] = _factory(info.default_factory)
                else:
                    required.add(info.name)
        return cls(
            schema=schema,
            kind=kind,
            types=types,
            strategies=found,
            defaults=defaults,
            required=frozenset(required),
        )

    # -- reading -----------------------------------------------------------------------------

    @property
    def keys(self) -> list[str] | None:
        """The declared keys, or ``None`` for a plain dict state (any key)."""
        return None if self.kind == "dict" else list(self.types)

    def strategy(self, key: str) -> KeyStrategy:
        return self.strategies.get(key, replace)

    def initial(self) -> dict[str, Any]:
        """The state before any input: the schema's defaults."""
        return {key: make() for key, make in self.defaults.items()}

    def typed(self, state: Mapping[str, Any]) -> Any:
        """The view nodes and routers get: a Struct instance, or a dict of typed values."""
        if self.kind == "struct":
            return msgspec.convert(dict(state), self.schema, strict=False)
        if self.kind == "typeddict":
            return {key: _typed(value, self.types.get(key, Any)) for key, value in state.items()}
        return dict(state)

    def result_type(self) -> Any:
        return self.schema if self.kind == "struct" else dict[str, Any]

    # -- writing -----------------------------------------------------------------------------

    def check_keys(self, update: Mapping[str, Any], source: str) -> None:
        """Refuse keys the state does not have, naming them and where they came from."""
        if self.kind == "dict":
            bad = [key for key in update if not isinstance(key, str)]
            if bad:
                raise InvalidUpdateError(f"{source} has non-string state keys {bad!r}")
            return
        unknown = sorted(str(key) for key in update if key not in self.types)
        if unknown:
            raise InvalidUpdateError(
                f"{source} writes {', '.join(map(repr, unknown))}, not in the state "
                f"(keys: {', '.join(self.types)})"
            )

    def apply(
        self,
        state: Mapping[str, Any],
        updates: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> dict[str, Any]:
        """Merge ``(source, update)`` pairs, in order, into a copy of ``state``.

        Every written key is checked against its annotation, so a node that writes the wrong
        type fails the step with an error naming the node and the key instead of handing the
        next node something it cannot read.
        """
        merged = dict(state)
        replaced: dict[str, str] = {}
        for source, update in updates:
            self.check_keys(update, source)
            for key, value in update.items():
                strategy = self.strategy(key)
                if strategy is replace:
                    earlier = replaced.get(key)
                    if earlier is not None and len(updates) > 1:
                        raise InvalidUpdateError(
                            f"state key {key!r} was written by both {earlier} and {source} in "
                            "one super-step; with the replace strategy only one write per step "
                            "is allowed (give the key append, merge or a reducer)"
                        )
                    replaced[key] = source
                value_type = self.types.get(key, Any)
                builtin = msgspec.to_builtins(value)
                try:
                    merged[key] = strategy.combine(
                        merged.get(key), builtin, key=key, value_type=value_type
                    )
                except InvalidUpdateError as exc:
                    raise InvalidUpdateError(f"{source}: {exc}") from None
                except Exception as exc:
                    raise InvalidUpdateError(
                        f"{source} wrote state key {key!r} a value its {strategy.name} "
                        f"strategy refused: {type(exc).__name__}: {exc}"
                    ) from exc
                if value_type is not Any:
                    try:
                        msgspec.convert(merged[key], value_type, strict=False)
                    except (msgspec.ValidationError, TypeError) as exc:
                        raise InvalidUpdateError(
                            f"{source} wrote state key {key!r} a value that is not a "
                            f"{_type_name(value_type)}: {exc}"
                        ) from None
        return merged

    def check_complete(self, state: Mapping[str, Any], source: str) -> None:
        missing = sorted(key for key in self.required if key not in state)
        if missing:
            raise InvalidUpdateError(
                f"{source} leaves required state key(s) {', '.join(map(repr, missing))} unset "
                f"(fields of {self.schema.__qualname__} without a default)"
            )


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: msgspec.to_builtins(value)


def _factory(make: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: msgspec.to_builtins(make())


def _type_name(value_type: Any) -> str:
    return getattr(value_type, "__qualname__", None) or repr(value_type)
