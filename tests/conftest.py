"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from terminal import Peers, Spawner, socket_dir


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A socket path in a fresh directory of its own, short enough for AF_UNIX (107 bytes).

    pytest's tmp_path is often too long for a socket address; ``socket_dir`` makes the
    directory under TMPDIR if that leaves room, else in a short standard place.
    """
    try:
        directory = socket_dir()
    except OSError as error:
        pytest.skip(str(error))
    yield os.path.join(directory, "talk.sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """``spawn(path, *extra, rows=24, cols=80)`` starts talk.py; all are killed at teardown."""
    spawner = Spawner()
    yield spawner
    spawner.close()


@pytest.fixture
def peer() -> Iterator[Peers]:
    """``peer(path)`` connects a plain socket; ``peer.listen(path)`` serves one. Closed at end."""
    peers = Peers()
    yield peers
    peers.close()
