"""The graph API is one facade: ``sdk.graph.__all__`` is sorted and names real objects."""

from __future__ import annotations

import sdk.graph


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = sdk.graph.__all__
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))
    for name in names:
        assert getattr(sdk.graph, name) is not None


def test_every_public_module_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(sdk.graph).items()
        if not name.startswith("_") and not type(value).__name__ == "module"
    }
    assert public == set(sdk.graph.__all__)
