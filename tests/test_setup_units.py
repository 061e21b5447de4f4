"""Unit tests of talk.py's socket set-up pieces (issue 7, §2): what each does to the files at
a path, on real sockets in a temporary directory, without a terminal; and of a private call's
(issue 9): where the two meet, who is logged in where, how often the party is told."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from login_records import utmp_record, write_utmp

import talk
from pubmarine import PubPen

LOGIN = pwd.getpwuid(os.getuid()).pw_name  # the user name talk.py shows for this process


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
    assert talk.listen_on(sock_path) is None
    assert os.lstat(sock_path).st_ino == before.st_ino
    assert os.listdir(os.path.dirname(sock_path)) == ["talk.sock"]


def test_listen_on_makes_a_socket_everyone_may_use_whatever_the_umask(sock_path: str) -> None:
    old = os.umask(0o077)
    try:
        listening = talk.listen_on(sock_path)
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


def test_meeting_places_are_the_same_whoever_calls() -> None:
    assert talk.meeting_path("/var/tmp", 1001, 1000) == "/var/tmp/talk-1000-1001.sock"
    assert talk.meeting_path("/var/tmp", 1000, 1001) == "/var/tmp/talk-1000-1001.sock"


def test_login_records_are_read_as_who_reads_them(tmp_path: Path) -> None:
    utmp = write_utmp(
        str(tmp_path / "utmp"),
        utmp_record("bob", "pts/3"),
        utmp_record("alice", "pts/4"),
        utmp_record("bob", "pts/5", kind=8),  # DEAD_PROCESS: logged out
        utmp_record("bob", "tty2"),
    )
    assert talk.logged_in_terminals("bob", utmp) == ["pts/3", "tty2"]
    assert talk.logged_in_terminals("carol", utmp) == []
    assert talk.logged_in_terminals("bob", str(tmp_path / "missing")) == []


@pytest.mark.asyncio
async def test_the_party_is_told_again_every_so_often_at_most_ten_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run by pytest-asyncio like the other loop tests: an asyncio.run() of its own would
    # replace (and on Python 3.9 orphan, unclosed) the loop pytest-asyncio had set.
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    shown: list[str] = []
    pubpen.subscribe("info", shown.append)
    told = []

    async def tell(party: object, notice: str) -> str:
        told.append(notice)
        return "told bob on pts/3"

    monkeypatch.setattr(talk, "tell", tell)
    monkeypatch.setattr(talk, "RING_EVERY", 0.001)
    me = pwd.getpwuid(os.getuid())
    party = talk.Party(me, me, "/nonexistent/x.sock")
    party.answer = "python3 talk.py me"
    protocol = talk.TalkProtocol(pubpen)
    await talk.ring(pubpen, party, protocol, [])
    await pubpen.drain()
    assert len(told) == 10
    assert shown[0] == f"Waiting for {LOGIN}: told bob on pts/3"
    assert shown[1] == f"Waiting for {LOGIN}: told bob on pts/3 (again: 2 of 10)"
    assert shown[-1].endswith("(again: 10 of 10)")
    assert len(shown) == 10
