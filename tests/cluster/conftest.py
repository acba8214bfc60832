"""The cluster tests run only when asked (`make test-cluster`, `pytest -m cluster`): they start (or reuse) the
whole of `make cluster` and kill machines in it, which takes minutes and the ports of `make cluster`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: starts `make cluster` and kills machines in it (make test-cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a cluster test: run it with `make test-cluster` (pytest -m cluster)")
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)
