"""Fixtures for the cluster tests: the Kamailio front (``kamailio.Kamailio``) started from the
real deployment config.

- ``kamailio_factory(nodes, port=None)``: writes a dispatcher list for ``nodes`` (``[(host, port)]``)
  into the test's tmp dir, starts Kamailio and waits until it answers OPTIONS; every Kamailio it
  started is stopped (SIGTERM, then SIGKILL, by its own pid) when the test ends.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.integration.cluster.kamailio import KAMAILIO, Kamailio


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which(KAMAILIO) is None:
        skip = pytest.mark.skip(reason="kamailio (Debian kamailio) is not installed; scripts/setup.sh installs it")
        for item in items:
            if "kamailio_factory" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


@pytest.fixture
def kamailio_factory(tmp_path: Path) -> Iterator[Callable[..., Kamailio]]:
    started: list[Kamailio] = []

    def start(nodes: list[tuple[str, int]], port: int | None = None) -> Kamailio:
        kam = Kamailio(tmp_path / f"kamailio{len(started)}", nodes, port)
        started.append(kam)
        return kam.start()

    try:
        yield start
    finally:
        for kam in started:
            kam.stop()
