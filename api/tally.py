"""Counts per tenant (or key) of things in progress, holding only the names with some: what bounds and shares read."""

from __future__ import annotations


def enter(counts: dict[str, int], name: str) -> None:
    """One more of `name`'s."""
    counts[name] = counts.get(name, 0) + 1


def leave(counts: dict[str, int], name: str) -> None:
    """One of `name`'s is over; a name with none left is dropped (the map stays as small as the names with
    something in progress)."""
    left = counts[name] - 1
    if left:
        counts[name] = left
    else:
        del counts[name]
