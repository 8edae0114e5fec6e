"""Test certificates made by ``scripts/make-test-certs.sh`` (the script is under test too).

``tls_certs`` (session fixture): the directory with ca.pem, node.pem/key, upstream.pem/key,
ap.pem/key and stranger.pem/key (signed by another CA). Import it into a conftest:
``from tests.tlscerts import tls_certs  # noqa: F401``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make-test-certs.sh"


def make_test_certs(directory: Path) -> Path:
    subprocess.run(["sh", str(SCRIPT), str(directory)], check=True, capture_output=True, timeout=60)
    return directory


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_certs(tmp_path_factory.mktemp("certs"))
