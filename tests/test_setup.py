"""Unit tests of the socket set-up pieces: what each does to the files at a path, on real
sockets in a temporary directory, without a terminal.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable, Iterator

import pytest
from terminal import DEADLINE

import talk
from pubmarine import PubPen


@pytest.fixture
def listener(sock_path: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    sock.listen(1)
    yield sock
    sock.close()


def stale_socket(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


def test_dial_finds_nobody_where_nothing_is(sock_path: str) -> None:
    assert talk.dial(sock_path) is None
    assert os.listdir(os.path.dirname(sock_path)) == []


def test_dial_removes_a_stale_socket_and_finds_nobody(sock_path: str) -> None:
    stale_socket(sock_path)
    assert talk.dial(sock_path) is None
    assert os.listdir(os.path.dirname(sock_path)) == []


def test_dial_calls_a_listener(sock_path: str, listener: socket.socket) -> None:
    sock = talk.dial(sock_path)
    assert sock is not None
    accepted, _ = listener.accept()
    accepted.close()
    sock.close()


def test_a_stale_socket_replaced_meanwhile_by_a_live_one_is_put_back(
    sock_path: str, listener: socket.socket
) -> None:
    # What another talk does between our look and our removal: it replaced the stale socket
    # we saw (a file that is gone now) with its own live one.
    other = sock_path + ".old"
    stale_socket(other)
    seen = talk.file_id(os.lstat(other))
    os.unlink(other)
    live = talk.file_id(os.lstat(sock_path))

    talk.remove_stale(sock_path, seen)

    assert talk.file_id(os.lstat(sock_path)) == live, "the live socket was not put back"
    assert os.listdir(os.path.dirname(sock_path)) == ["talk.sock"], "something left aside"


def test_listen_on_a_taken_path_gives_way_and_leaves_nothing(
    sock_path: str, listener: socket.socket
) -> None:
    before = os.lstat(sock_path)
    assert talk.listen_on(sock_path, 0o666) is None
    assert os.lstat(sock_path).st_ino == before.st_ino
    assert os.listdir(os.path.dirname(sock_path)) == ["talk.sock"]


def test_listen_on_makes_a_socket_everyone_may_use_whatever_the_umask(sock_path: str) -> None:
    old = os.umask(0o077)
    try:
        listening = talk.listen_on(sock_path, 0o666)
    finally:
        assert os.umask(old) == 0o077, "the umask was not restored"
    assert listening is not None
    sock, identity = listening
    try:
        st = os.lstat(sock_path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
        assert talk.file_id(st) == identity
        assert os.listdir(os.path.dirname(sock_path)) == ["talk.sock"], "private name left"
    finally:
        sock.close()


@pytest.mark.asyncio
async def test_a_full_queue_is_called_again_not_taken_for_a_held_place(
    sock_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone flooding a waiting talk with calls fills its queue for a moment: the caller
    looks again instead of going to wait elsewhere, where the two would never meet."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(sock_path)  # the queue is full
    full: list[str] = []
    dial = talk.dial

    def dial_during_a_flood(place: str, may_call: Callable[[int], bool]) -> socket.socket | None:
        try:
            return dial(place, may_call)
        except talk.QueueFull:
            full.append(place)
            if len(full) == 3:
                listener.accept()[0].close()  # the flood passes: there is room again
            raise

    monkeypatch.setattr(talk, "dial", dial_during_a_flood)
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    meeting = talk.Meeting(sock_path)
    call = await asyncio.wait_for(talk.connect_or_wait(pubpen, meeting), DEADLINE)
    try:
        assert full == [sock_path] * 3
        assert call.server is None, "it waited elsewhere instead of calling the listener"
        assert not os.path.exists(sock_path + ".1")
        answered, _ = listener.accept()
        answered.close()
    finally:
        await call.hang_up()
        filler.close()
        listener.close()
