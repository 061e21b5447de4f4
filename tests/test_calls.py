"""Unit tests of a call to one person (``talk.py USER``): where the two meet, who is logged in
where, how often the person is told.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from login_records import utmp_record, write_utmp
from terminal import DEADLINE, LOGIN, squeezed

import talk
from pubmarine import PubPen


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


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The notices talk sends, in order: tell() records them instead of running write(1)."""
    notices: list[str] = []

    async def tell(login: str, notice: str, lister: str = "", tty: str | None = None) -> str:
        notices.append(notice)
        return "told bob on pts/3"

    monkeypatch.setattr(talk, "tell", tell)
    return notices


@pytest.mark.asyncio
async def test_the_party_is_told_again_every_so_often_at_most_ten_times(
    monkeypatch: pytest.MonkeyPatch, told: list[str]
) -> None:
    # Run by pytest-asyncio like the other loop tests: an asyncio.run() of its own would
    # replace (and on Python 3.9 orphan, unclosed) the loop pytest-asyncio had set.
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    shown: list[str] = []
    pubpen.subscribe("info", shown.append)
    monkeypatch.setattr(talk, "TELL_EVERY", 0.001)
    me = pwd.getpwuid(os.getuid())
    call = talk.PrivateCall(me, me, "/nonexistent/x.sock", "python3 talk.py me")
    await call.announce(pubpen, talk.Call(talk.TalkProtocol(pubpen)), call.places[0], [])
    await pubpen.drain()
    assert len(told) == 10
    assert shown[0] == f"Waiting for {LOGIN}: told bob on pts/3"
    assert shown[1] == f"Waiting for {LOGIN}: told bob on pts/3 (again: 2 of 10)"
    assert shown[-1].endswith("(again: 10 of 10)")
    assert len(shown) == 10


@pytest.mark.asyncio
async def test_no_notice_goes_out_once_someone_joined(
    monkeypatch: pytest.MonkeyPatch, told: list[str], sock_path: str
) -> None:
    """Telling stops when the call is answered, not when the next notice is due: a notice
    after that would land on the terminal of someone already talking."""
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    monkeypatch.setattr(talk, "TELL_EVERY", 0.05)
    me = pwd.getpwuid(os.getuid())
    meeting = talk.PrivateCall(me, me, sock_path, "python3 talk.py me")
    call = await talk.connect_or_wait(pubpen, meeting)
    try:
        await asyncio.wait_for(_until(lambda: len(told) == 1), DEADLINE)
        me_calling = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        me_calling.connect(sock_path)  # the call is answered: by me, whom it admits
        joined = asyncio.Event()
        pubpen.subscribe("joined", lambda *_: joined.set())
        await asyncio.wait_for(joined.wait(), DEADLINE)
        assert call.telling is not None
        await asyncio.wait([call.telling], timeout=DEADLINE)  # telling is over, one way or another
        assert told == told[:1], "a notice went out after the call was answered"
        assert call.telling.cancelled()
        me_calling.close()
    finally:
        await call.hang_up()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)  # each turn of the loop lets the telling task run


def test_a_listener_is_seen_whatever_the_size_of_its_inode_number(
    sock_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's socket table keeps 32 bits of an inode number; file systems with 64-bit
    inode numbers (XFS, tmpfs with inode64) have larger ones: a live caller there is not stale."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    live = talk.listening_files()
    if live is None:
        pytest.skip("this system does not show its socket table (sock_diag)")
    real = os.lstat(sock_path)
    fields = list(real)
    fields[1] = real.st_ino + (1 << 32)  # st_ino, as a file system with 64-bit inodes has it
    wide = os.stat_result(fields)
    lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path: wide if path == sock_path else lstat(path))
    try:
        found = talk.listener_at(sock_path, live)
        assert found is not None and found.st_ino == wide.st_ino, "a live listener taken as stale"
    finally:
        monkeypatch.undo()
        listener.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("cols", [80, 40])
async def test_a_caller_turned_away_leaves_whom_we_wait_for_and_the_way_out(cols: int) -> None:
    """At 40 columns too, the status line of a call that turned someone away still says
    whom it waits for, and how to quit; the whole news is below it."""
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    callee = pwd.getpwuid(os.getuid())
    call = talk.PrivateCall(callee, callee, "/nonexistent/pair.sock", "talk.py me")
    display = talk.Display(pubpen)
    display.show_status(call.turned_away(talk.Peer("mallory-with-a-long-name", 4242424)))
    status = display.status_line(cols)
    assert status.startswith(f"Waiting for {callee.pw_name}"), status
    assert status.endswith(tuple(f" - {hint}" for hint in talk.QUIT_HINTS)), status
    assert len(status) <= cols
    whole = (
        f"Turned away mallory-with-a-long-name (pid 4242424); still waiting for {callee.pw_name}"
    )
    assert squeezed("".join(display.whole_news(status, cols - 1, 10))) == squeezed(whole)
