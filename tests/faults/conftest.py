"""What every fault test stands on: a PostgreSQL private to its module, and a scratch folder per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.servers import PrivatePostgres, short_temp_dir


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = short_temp_dir("lf-run-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
