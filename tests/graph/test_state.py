"""Merge strategies and state schemas, on the state alone (no run needed)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import msgspec
import pytest

from sdk.graph import InvalidUpdateError, StateGraph, append, merge, reducer


class Item(msgspec.Struct):
    name: str
    qty: int


class Order(msgspec.Struct, kw_only=True):
    customer: str
    items: Annotated[list[Item], append] = []
    tags: Annotated[dict[str, str], merge] = {}
    total: Annotated[int, reducer(operator.add)] = 0
    note: str = ""


def spec() -> Any:
    return StateGraph(Order).spec


def test_replace_is_the_default_strategy() -> None:
    state = spec().apply({"note": "a"}, [("n1", {"note": "b"})])
    assert state["note"] == "b"


def test_append_concatenates_lists_and_appends_single_items() -> None:
    state = spec().apply({"items": []}, [("n1", {"items": [Item("a", 1)]})])
    state = spec().apply(state, [("n2", {"items": {"name": "b", "qty": 2}})])
    assert state["items"] == [{"name": "a", "qty": 1}, {"name": "b", "qty": 2}]


def test_merge_is_a_dict_union_where_the_update_wins() -> None:
    state = spec().apply({"tags": {"a": "1", "b": "2"}}, [("n", {"tags": {"b": "3", "c": "4"}})])
    assert state["tags"] == {"a": "1", "b": "3", "c": "4"}


def test_custom_reducer_sees_each_update_in_task_order() -> None:
    state = spec().apply({"total": 1}, [("n1", {"total": 2}), ("n2", {"total": 3})])
    assert state["total"] == 6


def test_bare_callable_in_annotated_is_a_reducer() -> None:
    class State(TypedDict):
        log: Annotated[list[str], operator.add]

    state = StateGraph(State).spec.apply({"log": ["a"]}, [("n", {"log": ["b"]})])
    assert state["log"] == ["a", "b"]


def test_two_writes_to_a_replace_key_in_one_step_are_an_error_naming_both() -> None:
    with pytest.raises(InvalidUpdateError, match=r"written by both n1 and n2"):
        spec().apply({}, [("n1", {"note": "x"}), ("n2", {"note": "y"})])


def test_update_of_the_wrong_type_names_the_writer_and_the_key() -> None:
    with pytest.raises(InvalidUpdateError, match=r"node 'x' wrote state key 'note' a value"):
        spec().apply({}, [("node 'x'", {"note": 42})])


def test_reducer_that_raises_is_reported_as_an_invalid_update() -> None:
    with pytest.raises(InvalidUpdateError, match=r"'total' a value its add strategy refused"):
        spec().apply({"total": 0}, [("node 'x'", {"total": "lots"})])


def test_update_naming_an_unknown_key_is_refused() -> None:
    with pytest.raises(InvalidUpdateError, match=r"writes 'colour', not in the state"):
        spec().apply({}, [("node 'x'", {"colour": "red"})])


def test_struct_defaults_seed_the_state_and_required_fields_are_checked() -> None:
    s = spec()
    assert s.initial() == {"items": [], "tags": {}, "total": 0, "note": ""}
    with pytest.raises(InvalidUpdateError, match=r"'customer' unset"):
        s.check_complete(s.initial(), "the input")


def test_nodes_see_the_typed_view_of_a_struct_state() -> None:
    typed = spec().typed({"customer": "c", "items": [{"name": "a", "qty": 1}]})
    assert typed == Order(customer="c", items=[Item("a", 1)])


def test_plain_dict_state_takes_any_key_with_given_strategies() -> None:
    s = StateGraph(strategies={"seen": append}).spec
    state = s.apply({}, [("n", {"seen": "a", "anything": 1})])
    assert state == {"seen": ["a"], "anything": 1}
