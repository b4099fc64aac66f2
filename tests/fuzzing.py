"""Hypothesis strategies shared by the property-based tests: JSON-like values a user might write."""

from __future__ import annotations

from hypothesis import strategies as st

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)


def settings_of(names: list[str], values=json_values) -> st.SearchStrategy[dict]:
    """Dicts of known setting names (and a few unknown ones) to arbitrary values."""
    keys = st.one_of(st.sampled_from(names), st.text(max_size=8))
    return st.dictionaries(keys, values, max_size=5)
