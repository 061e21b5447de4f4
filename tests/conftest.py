"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from terminal import Listener, Peer, Talk


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A socket path in a fresh directory of its own, short enough for AF_UNIX (107 bytes).

    pytest's tmp_path can be too long for a socket address, hence a directory under /tmp.
    """
    directory = tempfile.mkdtemp(dir="/tmp", prefix="talk-")
    yield os.path.join(directory, "talk.sock")
    shutil.rmtree(directory, ignore_errors=True)


class _Spawner:
    def __init__(self) -> None:
        self.started: list[Talk] = []

    def __call__(self, socket_path: str, *extra: str, **kwargs: Any) -> Talk:
        talk = Talk(socket_path, *extra, **kwargs)
        self.started.append(talk)
        return talk

    def close(self) -> None:
        for talk in self.started:
            talk.close()


@pytest.fixture
def spawn() -> Iterator[_Spawner]:
    """``spawn(path, *extra, rows=24, cols=80)`` starts talk.py; all are killed at teardown."""
    spawner = _Spawner()
    yield spawner
    spawner.close()


class _Peers:
    def __init__(self) -> None:
        self.opened: list[Peer | Listener] = []

    def __call__(self, path: str, timeout: float = 10.0) -> Peer:
        """Connect to ``path`` (retrying until it accepts)."""
        peer = Peer.connect(path, timeout)
        self.opened.append(peer)
        return peer

    def listen(self, path: str) -> Listener:
        """Listen on ``path``; the Peer comes from ``.accept(timeout)``."""
        listener = Peer.listen(path)
        self.opened.append(listener)
        return listener

    def close(self) -> None:
        for item in reversed(self.opened):
            item.close()


@pytest.fixture
def peer() -> Iterator[_Peers]:
    """``peer(path)`` connects a plain socket; ``peer.listen(path)`` serves one. Closed at end."""
    peers = _Peers()
    yield peers
    peers.close()
