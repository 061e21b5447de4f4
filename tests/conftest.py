"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest
from as_user import readable_copy, remove_made_users, shared_dir
from terminal import NO_TALK_DAEMON, Peers, ScreenTalk, Spawner, socket_dir
from world import World, world


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The accounts this run made go with it (as_user.ensure_user)."""
    remove_made_users()


@pytest.fixture(autouse=True)
def no_talk_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """talk.py, imported by a test, finds no talk daemon (``terminal.NO_TALK_DAEMON``)
    unless the test points it at one."""
    monkeypatch.setenv("TALK_DAEMON", NO_TALK_DAEMON)


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
    with contextlib.closing(Spawner()) as spawner:
        yield spawner


@pytest.fixture
def spawn_screen(spawn: Spawner) -> Spawner:
    """``spawn``, but the programs' rows are read cell by cell (``terminal.ScreenTalk``)."""
    spawn.kind = ScreenTalk
    return spawn


@pytest.fixture
def peer() -> Iterator[Peers]:
    """``peer(path)`` connects a plain socket; ``peer.listen(path)`` serves one. Closed at end."""
    with contextlib.closing(Peers()) as peers:
        yield peers


@pytest.fixture
def code_dir() -> Iterator[str]:
    """A directory every user can read, with copies of talk.py and pubmarine.py: what tests
    run as other users (``as_user.spawn_as``), since the checkout itself may be private."""
    directory = readable_copy()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sticky_dir() -> Iterator[str]:
    """A fresh directory like /var/tmp: every user may create files in it, and only a file's
    owner may remove it (sticky)."""
    directory = shared_dir("talk-pub-", 0o1777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def test_world() -> Iterator[World]:
    """Namespaces of the test's own, for its daemons and logins (world.py); needs root."""
    with world() as made:
        yield made


@pytest.fixture
def spawn_in_world(spawn_screen: Spawner, test_world: World) -> Spawner:
    """``spawn_screen``, but every program it starts (logins, talk.py) runs in the test's
    world."""
    spawn_screen.enter = test_world.enter
    return spawn_screen
