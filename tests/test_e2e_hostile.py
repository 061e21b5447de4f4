"""End-to-end tests of talk.py on a hostile box (issue 4).

On a shared machine anyone can connect to the socket, the socket path can hold anything, and
terminals get closed, resized and interrupted. Each test here runs the real talk.py in a
pseudo-terminal (see terminal.py) and checks what a person would observe: the screen, the
``talk: ...`` line printed once the terminal is given back, the exit status, the socket file.
The hostile peer is a plain AF_UNIX socket in the test, or a process that the test kills.

Screen layout (UI contract): row 0 status, row 1 '-' rule, rows 2..R-3 conversation,
row R-2 '=' rule, row R-1 input line.

Nothing sleeps to synchronise: every step waits, with a deadline, for a condition. The one
condition that is not on a screen, "talk.py has read everything the peer sent", is read from
the kernel (SIOCOUTQ on the peer's socket: bytes sent and not yet taken by the receiver).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from as_user import needs_root, shared_dir, spawn_as
from terminal import (
    ENTER_ALTERNATE_SCREEN,
    LEAVE_ALTERNATE_SCREEN,
    REPO_ROOT,
    TALK_PY,
    Peer,
    Peers,
    Spawner,
    Talk,
    assert_layout,
    child_env,
    conversation,
    drawn,
    input_row,
    start_server,
    start_with_peer,
    talking_to,
    wait_for_waiting,
    wait_until,
)

DEADLINE = 10.0  # for anything to show up
PROMPTLY = 5.0  # from a trigger (signal, peer death) to the program's exit; CI is noisy
MAX_LINE = 64 * 1024
CUT_MARK = " [line cut]"
NOBODY = 65534
OTHER_UID = 65533  # neither root nor nobody: may not remove nobody's file in a sticky directory

# -- helpers -------------------------------------------------------------------------------------


def last_row(talk: Talk) -> str:
    """The newest row of the conversation: its last non-blank row."""
    shown = [row for row in conversation(talk) if row]
    return shown[-1] if shown else ""


def wait_last_row(talk: Talk, text: str) -> None:
    """Wait until the newest row of the conversation is ``text`` and the update is whole.

    The update ends after that row (the cursor goes back to the input line), and the checks
    that follow look at the cursor and the rows below it.
    """
    talk.wait_until(
        lambda t: last_row(t) == text and drawn(t), DEADLINE, f"{text!r} as the newest row"
    )


def flowing(rows: list[str]) -> str:
    """Rows joined as running text: wrapping and indentation become single spaces."""
    return re.sub(" +", " ", " ".join(row.strip() for row in rows))


def terminal_restored(talk: Talk) -> bool:
    """curses gave the terminal back: alternate screen left and line mode (ICANON) back on.

    The pty's modes are read through the master side, which shares them with the slave.
    """
    lflag = termios.tcgetattr(talk.child.child_fd)[3]
    return talk.left_alternate_screen and bool(lflag & termios.ICANON)


def unread(peer: Peer) -> int:
    """Bytes the peer sent that the other end has not read yet (SIOCOUTQ)."""
    out = fcntl.ioctl(peer.sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", out)[0])


def wait_taken(peer: Peer) -> None:
    """Wait until talk.py has read everything the peer sent."""
    wait_until(lambda: unread(peer) == 0, DEADLINE, "talk.py to read everything the peer sent")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def exit_of(talk: Talk, timeout: float = DEADLINE) -> tuple[int, str]:
    """Wait for the program to end: (exit status, everything printed after curses ended)."""
    status = talk.wait_exit(timeout)
    return status, talk.after_exit


def exit_with_one_line(talk: Talk, start: str) -> str:
    """Wait for exit status 1 after one printed line that begins with ``start``; that line.

    A problem found before the conversation starts is reported without taking the screen
    over first: no flash of an empty talk screen before the message.
    """
    status, printed = exit_of(talk)
    assert status == 1, f"exit status {status}; printed {printed!r}"
    assert ENTER_ALTERNATE_SCREEN not in talk.raw, "the screen was taken over before the error"
    assert printed.startswith(start) and "\n" not in printed, (
        f"expected one line starting {start!r}, got {printed!r}"
    )
    return printed


@pytest.fixture
def public_dir() -> Iterator[str]:
    """A fresh directory owned by root, mode 0755: other users can enter it, not write it."""
    directory = shared_dir("talk-pub-", 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# -- 1. nothing a peer sends can act on the terminal ----------------------------------------------

# name: (payload for a screen of `cols` columns, text that must be visible, bytes that must never
# reach the terminal or None)
FORGERIES: dict[str, tuple[Callable[[int], bytes], str, bytes | None]] = {
    "carriage_return": (
        lambda cols: b"hi\r<myself> forged\n",
        "<you> hi^M<myself> forged",
        b"hi\r<myself>",
    ),
    "backspaces": (
        lambda cols: b"\x08" * 10 + b"<myself> x\n",
        "<you> " + "^H" * 10 + "<myself> x",
        b"\x08" * 10 + b"<myself>",
    ),
    "clear_screen_and_home": (
        lambda cols: b"\x1b[2J\x1b[H<myself> x\n",
        "<you> ^[[2J^[[H<myself> x",
        b"\x1b[2J\x1b[H<myself>",
    ),
    "c1_csi": (
        lambda cols: "\u009b2J<myself> x\n".encode(),
        "<you> <U+009B>2J<myself> x",
        "\u009b2J".encode(),
    ),
    "osc_window_title": (
        lambda cols: b"\x1b]0;title\x07<myself> x\n",
        "<you> ^[]0;title^G<myself> x",
        b"\x1b]0;title",
    ),
    "other_c0_and_del": (
        lambda cols: b"nul\x00 del\x7f tab\t bell\x07\n",
        "<you> nul^@ del^? tab^I bell^G",
        b"del\x7f",
    ),
    # "<you> x" and spaces fill the first row exactly, so a plain wrap would start the next row
    # with "<myself>".
    "wrap_after_spaces": (
        lambda cols: b"x" + b" " * (cols - len("<you> x")) + b"<myself> forged\n",
        "<myself> forged",
        None,
    ),
    "wrap_inside_a_word": (
        lambda cols: b"x" * (cols - len("<you> ")) + b"<myself> forged\n",
        "<myself> forged",
        None,
    ),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_peer_text_is_shown_inert_and_cannot_forge_own_lines(
    spawn: Spawner, peer: Peers, sock_path: str, name: str
) -> None:
    make_payload, visible, forbidden = FORGERIES[name]
    talk, other = start_with_peer(spawn, peer, sock_path)
    status = talk.row(0)

    other.send(make_payload(talk.cols))
    other.send_line("end of payload")
    wait_last_row(talk, "<you> end of payload")

    screen = talk.text()
    assert any(visible in row for row in conversation(talk)), (
        f"the message should be shown as {visible!r}:\n{screen}"
    )
    forged = [row for row in talk.display if row.startswith("<myself>")]
    assert not forged, f"a peer drew <myself> at the start of a row: {forged}\n{screen}"
    assert_layout(talk, status)
    assert input_row(talk) == "", f"the input line changed:\n{screen}"
    if forbidden is not None:
        assert forbidden not in talk.raw, (
            f"the peer's control bytes {forbidden!r} reached the terminal"
        )


# -- 2. UTF-8 from the peer ----------------------------------------------------------------------


def test_invalid_utf8_from_peer_shows_replacement_character(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    other.send(b"bad \xff\xfe bytes, \xe2\x82 cut short\n")
    # In the conversation, not anywhere on the screen (the status line names the user).
    talk.wait_until(
        lambda t: "cut short" in last_row(t) and drawn(t), DEADLINE, "the whole message"
    )
    row = last_row(talk)
    assert row.startswith("<you> bad \ufffd"), f"invalid bytes not shown as U+FFFD: {row!r}"
    assert "bytes, \ufffd" in row, f"a truncated sequence not shown as U+FFFD: {row!r}"


def test_multibyte_character_split_across_reads_is_decoded_whole(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    pieces = [b"caf\xc3", b"\xa9 costs 5 \xe2", b"\x82", b"\xac, \xf0\x9f", b"\x8d\xb5 ok\n"]
    for piece in pieces:
        other.send(piece)
        wait_taken(other)  # talk.py has read this piece on its own
    # "ok" in the conversation, not anywhere: a login name on the status line may hold it.
    talk.wait_until(lambda t: last_row(t).endswith("ok") and drawn(t), DEADLINE, "the message")
    row = last_row(talk)
    assert row == "<you> café costs 5 €, 🍵 ok", f"split characters not decoded whole: {row!r}"


# -- 3. a line with no end -----------------------------------------------------------------------


def test_peer_line_is_cut_at_64_kib_with_visible_mark(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)

    other.send(b"A" * MAX_LINE + b"\n")
    other.send_line("after the longest whole line")
    wait_last_row(talk, "<you> after the longest whole line")
    assert "[line cut]" not in talk.text(), f"a 64 KiB line was cut:\n{talk.text()}"

    other.send(b"B" * MAX_LINE + b"C" * 1000 + b"\n")
    other.send_line("after the cut line")
    wait_last_row(talk, "<you> after the cut line")
    shown = conversation(talk)[:-1]
    assert flowing(shown).endswith("B" + CUT_MARK), (
        f"a line over 64 KiB should end with {CUT_MARK!r}:\n{talk.text()}"
    )
    assert not any("C" in row for row in shown), (
        f"what came after 64 KiB should be dropped:\n{talk.text()}"
    )


def test_endless_peer_line_keeps_memory_flat(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    before = rss_kib(talk.pid)

    other.sock.settimeout(DEADLINE)
    chunk = b"A" * (1 << 20)
    for _ in range(16):  # 16 MiB, no newline
        other.send(chunk)
    wait_taken(other)
    other.send(b"\nnext line\n")
    wait_last_row(talk, "<you> next line")

    grown = rss_kib(talk.pid) - before
    assert grown < 8 * 1024, f"talk.py grew by {grown} KiB reading a 16 MiB line"
    assert flowing(conversation(talk)[:-1]).endswith("A" + CUT_MARK), talk.text()


# -- 4. and 5. floods ----------------------------------------------------------------------------


def _line_number(row: str) -> int:
    match = re.fullmatch(r"<you> line (\d+)", row)
    assert match, f"not a flood line: {row!r}"
    return int(match.group(1))


def test_flood_of_5000_lines_arrives_in_order_and_keyboard_stays_live(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    other.send(b"".join(b"line %d\n" % i for i in range(5000)))
    talk.type("typed during the flood")

    talk.wait_until(
        lambda t: (
            last_row(t) == "<you> line 4999"
            and input_row(t) == "typed during the flood"
            and drawn(t)
        ),
        DEADLINE,
        "the last flood line and the typed text",
    )
    numbers = [_line_number(row) for row in conversation(talk)]
    first = 5000 - len(numbers)
    assert numbers == list(range(first, 5000)), f"lines missing or out of order: {numbers}"


def test_2000_pasted_lines_all_reach_the_peer_whole_and_in_order(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    count = 2000
    paste = b"".join(b"line %d\r" % i for i in range(count))

    # One big paste. A pty takes only a few KiB at a time, and talk.py only reads more once its
    # screen output has been read, so the paste is written from a thread while this one reads.
    def write_paste() -> None:
        view = memoryview(paste)
        while view:
            view = view[os.write(talk.child.child_fd, view) :]

    writer = threading.Thread(target=write_paste, daemon=True)
    writer.start()
    received = b""
    other.sock.settimeout(0.02)
    deadline = time.monotonic() + DEADLINE
    while received.count(b"\n") < count and time.monotonic() < deadline:
        talk.pump(0)
        try:
            data = other.sock.recv(1 << 16)
        except socket.timeout:
            continue
        assert data, f"the connection closed after {len(received.splitlines())} lines"
        received += data
    writer.join(DEADLINE)

    lines = received.split(b"\n")[:-1]
    expected = [b"line %d" % i for i in range(count)]
    assert len(lines) == count, f"{len(lines)} of {count} pasted lines arrived"
    assert lines == expected, "pasted lines arrived changed or out of order"
    wait_last_row(talk, f"<myself> line {count - 1}")


# -- 6. a peer that dies ---------------------------------------------------------------------------

_CONNECT_AND_WAIT = (
    "import signal, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.connect(sys.argv[1])\n"
    "print('connected', flush=True)\n"
    "signal.pause()\n"
)


def test_peer_killed_without_closing_is_noticed_at_once(spawn: Spawner, sock_path: str) -> None:
    talk = start_server(spawn, sock_path)
    command = [sys.executable, "-c", _CONNECT_AND_WAIT, sock_path]
    # The with block closes the pipe and reaps the process, also when an assertion fails.
    with subprocess.Popen(command, stdout=subprocess.PIPE) as other:
        try:
            assert other.stdout is not None
            assert other.stdout.readline() == b"connected\n"
            talk.wait_for_row(0, talking_to(other.pid))
        finally:
            other.kill()  # SIGKILL: the peer never says goodbye
        other.wait(DEADLINE)

    # Noticed at once: the status line says so; the screen stays until a key is pressed.
    talk.wait_until(lambda t: " left - press any key" in t.row(0), PROMPTLY, "the peer's leaving")
    talk.type("x")
    status, printed = exit_of(talk, PROMPTLY)
    assert status == 0, f"exit status {status}; printed {printed!r}"
    assert terminal_restored(talk), "the terminal was not restored"
    assert talk.last_line == "talk: the other side closed the connection", printed
    assert not os.path.exists(sock_path), "the socket file was left behind"


# -- 7. nothing, or a stale socket, at the path --------------------------------------------------


def test_nothing_at_the_path_makes_talk_the_server(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path)
    wait_for_waiting(talk, sock_path)
    wait_until(lambda: os.path.exists(sock_path), what="the socket file")
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode), "the file at the path is not a socket"


def test_stale_socket_is_taken_over(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # left behind without unlink(), as by a talk that was killed

    talk = spawn(sock_path)
    wait_for_waiting(talk, sock_path)
    other = peer(sock_path)
    talk.wait_for_row(0, talking_to(os.getpid()))
    other.send_line("hello over the old path")
    wait_last_row(talk, "<you> hello over the old path")


# -- 8. something else at the path ---------------------------------------------------------------


def _snapshot(path: str) -> tuple[object, ...]:
    """Everything about ``path`` that touching it could change (not following symlinks)."""
    st = os.lstat(path)
    shot: tuple[object, ...] = (
        st.st_mode,
        st.st_ino,
        st.st_dev,
        st.st_size,
        st.st_nlink,
        st.st_uid,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )
    if stat.S_ISLNK(st.st_mode):
        shot += (os.readlink(path),)
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as file:
            shot += (file.read(),)
    elif stat.S_ISDIR(st.st_mode):
        shot += (sorted(os.listdir(path)),)
    return shot


def _make_file(path: str, peer: Peers) -> list[str]:
    with open(path, "w") as file:
        file.write("precious notes\n")
    return [path]


def _make_directory(path: str, peer: Peers) -> list[str]:
    os.mkdir(path)
    _make_file(os.path.join(path, "inside"), peer)
    return [path, os.path.join(path, "inside")]


def _make_symlink_to_file(path: str, peer: Peers) -> list[str]:
    target = path + ".target"
    _make_file(target, peer)
    os.symlink(target, path)
    return [path, target]


def _make_dangling_symlink(path: str, peer: Peers) -> list[str]:
    os.symlink(path + ".nowhere", path)
    return [path]


def _make_symlink_to_live_socket(path: str, peer: Peers) -> list[str]:
    target = path + ".live"
    peer.listen(target)
    os.symlink(target, path)
    return [path, target]


def _make_fifo(path: str, peer: Peers) -> list[str]:
    os.mkfifo(path)
    return [path]


NOT_SOCKETS = {
    "regular_file": _make_file,
    "directory": _make_directory,
    "symlink_to_file": _make_symlink_to_file,
    "dangling_symlink": _make_dangling_symlink,
    "symlink_to_live_socket": _make_symlink_to_live_socket,
    "fifo": _make_fifo,
}


@pytest.mark.parametrize("kind", NOT_SOCKETS)
def test_path_that_is_not_a_socket_is_left_alone_with_an_error(
    spawn: Spawner, peer: Peers, sock_path: str, kind: str
) -> None:
    watched = NOT_SOCKETS[kind](sock_path, peer)
    before = {path: _snapshot(path) for path in watched}

    talk = spawn(sock_path)
    exit_with_one_line(talk, f"talk: {sock_path} exists and is not a socket")
    assert "Traceback" not in talk.output
    after = {path: _snapshot(path) for path in watched}
    assert after == before, f"the {kind} at the socket path was touched"


# -- 9. directories that cannot hold the socket ---------------------------------------------------


def test_missing_directory_is_a_clear_error(spawn: Spawner, sock_path: str) -> None:
    directory = os.path.join(os.path.dirname(sock_path), "missing")
    path = os.path.join(directory, "talk.sock")
    talk = spawn(path)
    exit_with_one_line(talk, f"talk: cannot create socket {path}: ")
    assert not os.path.exists(directory), "talk.py created the missing directory"


@needs_root
def test_unwritable_directory_is_a_clear_error(
    spawn: Spawner, public_dir: str, code_dir: str
) -> None:
    path = os.path.join(public_dir, "talk.sock")
    talk = spawn_as(spawn, code_dir, NOBODY, "--socket", path)
    exit_with_one_line(talk, f"talk: cannot create socket {path}: ")
    assert os.listdir(public_dir) == [], "something was created in the directory"


@needs_root
def test_stale_socket_of_another_user_in_sticky_directory_suggests_socket_option(
    spawn: Spawner, public_dir: str, code_dir: str
) -> None:
    sticky = os.path.join(public_dir, "shared")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)  # like /tmp: only a file's owner may remove it
    path = os.path.join(sticky, "talk.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    os.chmod(path, 0o666)  # as talk.py leaves its own socket: anyone may connect
    os.chown(path, NOBODY, NOBODY)
    before = _snapshot(path)

    talk = spawn_as(spawn, code_dir, OTHER_UID, "--socket", path)
    printed = exit_with_one_line(talk, f"talk: {path} is a stale socket")
    assert "cannot be removed" in printed and "--socket" in printed, printed
    assert _snapshot(path) == before, "the other user's socket was touched"


# -- 10. two at the same instant -----------------------------------------------------------------


# talk.py held back just before it looks at the socket path. Its connect_or_wait() first marks
# that it is ready (a file named argv[2] + pid), then reads from the FIFO argv[1] the instant (a
# time.monotonic() value, the same clock in every process) at which to go on, and waits for it.
# Two of these set up the same socket within microseconds of each other, which two talks simply
# started back to back (milliseconds apart) almost never do.
_AT_THE_SIGNAL = """\
import os
import struct
import sys
import time
sys.path.insert(0, {repo!r})
import talk

gate, ready = sys.argv[1], sys.argv[2]
original = talk.connect_or_wait


async def connect_or_wait(*args):
    fd = os.open(gate, os.O_RDONLY)
    open(ready + str(os.getpid()), "w").close()
    (start,) = struct.unpack("d", os.read(fd, 8))
    os.close(fd)
    while time.monotonic() < start:
        pass
    return await original(*args)


talk.connect_or_wait = connect_or_wait
sys.exit(talk.main(sys.argv[3:]))
"""


def _start_together(spawn: Spawner, path: str, starter: str, gate_path: str) -> tuple[Talk, Talk]:
    """Two talk.py on ``path`` that look at it at the same instant."""
    os.mkfifo(gate_path)
    gate = os.open(gate_path, os.O_RDWR)  # so that neither blocks opening it
    try:
        ready = gate_path + "-ready-"
        args = [starter, gate_path, ready, "--socket", path]
        first, second = spawn(path, args=args), spawn(path, args=args)
        for pid in (first.pid, second.pid):
            wait_until(partial(os.path.exists, f"{ready}{pid}"), what=f"pid {pid} to be ready")
        os.write(gate, struct.pack("d", time.monotonic() + 0.05) * 2)
    finally:
        os.close(gate)
    return first, second


def test_two_started_at_once_connect_to_each_other(
    spawn: Spawner, peer: Peers, sock_path: str, tmp_path: Path
) -> None:
    starter = tmp_path / "talk_at_the_signal.py"
    starter.write_text(_AT_THE_SIGNAL.format(repo=str(REPO_ROOT)))
    directory = os.path.dirname(sock_path)
    for round_ in range(6):
        path = os.path.join(directory, f"race{round_}.sock")
        if round_ % 2:
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)
            stale.close()
        first, second = _start_together(spawn, path, str(starter), str(tmp_path / f"go{round_}"))

        first.wait_for_row(0, talking_to(second.pid))
        second.wait_for_row(0, talking_to(first.pid))
        assert stat.S_ISSOCK(os.lstat(path).st_mode), f"round {round_}: socket file gone"
        third = peer(path)
        line = third.read_line()
        assert line.startswith(b"talk: busy"), f"round {round_}: a third caller got {line!r}"
        assert os.path.exists(path), f"round {round_}: the live socket file was removed"
        first.close()
        second.close()


# -- 11. signals and a closed terminal ----------------------------------------------------------

ENDINGS: dict[str, tuple[Callable[[Talk], None], int, str]] = {
    "ctrl_c": (lambda talk: talk.press("ctrl_c"), 130, "talk: interrupted"),
    "sigterm": (lambda talk: talk.kill(signal.SIGTERM), 143, "talk: terminated"),
    "sighup": (lambda talk: talk.kill(signal.SIGHUP), 129, "talk: hung up"),
}


@pytest.mark.parametrize("how", ENDINGS)
def test_interrupt_or_signal_restores_terminal_and_removes_socket(
    spawn: Spawner, peer: Peers, sock_path: str, how: str
) -> None:
    trigger, expected_status, expected_line = ENDINGS[how]
    talk, _other = start_with_peer(spawn, peer, sock_path)

    trigger(talk)
    status, printed = exit_of(talk, PROMPTLY)

    assert status == expected_status, f"exit status {status}; printed {printed!r}"
    assert terminal_restored(talk), "the terminal was not restored"
    assert talk.last_line == expected_line, printed
    assert "Traceback" not in talk.output, printed
    assert not os.path.exists(sock_path), "the socket file was left behind"


def test_closed_terminal_ends_talk_and_removes_socket(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)

    # What closing a terminal window does: the pty master goes away, the kernel hangs up.
    talk.close_terminal()
    wait_until(lambda: not talk.child.isalive(), PROMPTLY, "talk.py to exit after the hang-up")

    assert talk.child.signalstatus is None, f"killed by signal {talk.child.signalstatus}"
    assert not os.path.exists(sock_path), "the socket file was left behind"
    assert other.wait_closed(DEADLINE), "the peer's connection is still open"


def test_closed_terminal_exit_status_is_that_of_sighup(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, _other = start_with_peer(spawn, peer, sock_path)
    talk.close_terminal()
    wait_until(lambda: not talk.child.isalive(), PROMPTLY, "talk.py to exit after the hang-up")
    assert talk.child.signalstatus is None, f"killed by signal {talk.child.signalstatus}"
    assert talk.child.exitstatus == 128 + signal.SIGHUP, f"exit status {talk.child.exitstatus}"


# A terminal that goes away without a SIGHUP: talk.py's standard streams are a pty that is not
# its controlling terminal (a new session that never opened it), so closing the master side
# hangs nobody up. All talk.py can see is a stdin that is readable and never has a key.


def test_terminal_gone_without_a_hangup_signal_still_ends_talk(peer: Peers, sock_path: str) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = [sys.executable, str(TALK_PY), "--socket", sock_path]
    try:
        talk = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=child_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    with talk:
        try:
            other = peer(sock_path)
            screen = b""
            deadline = time.monotonic() + DEADLINE
            while b"Talking to" not in screen:
                assert time.monotonic() < deadline, f"no conversation on the screen: {screen!r}"
                if select.select([master], [], [], 0.05)[0]:
                    screen += os.read(master, 1 << 16)
        finally:
            os.close(master)  # the terminal goes away
        try:
            status = talk.wait(PROMPTLY)
        except subprocess.TimeoutExpired:
            talk.kill()
            raise AssertionError("talk.py kept running after its terminal went away") from None
    assert status > 0, f"exit status {status}: expected an error status, not a signal"
    assert other.wait_closed(DEADLINE), "the peer's connection is still open"
    assert not os.path.exists(sock_path), "the socket file was left behind"


# -- 12. hanging up -------------------------------------------------------------------------------


def test_hang_up_leaves_alone_a_socket_file_that_replaced_its_own(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, _other = start_with_peer(spawn, peer, sock_path)
    # Someone removes talk's socket file and serves on the same path (a cleanup script, another
    # program): when talk hangs up, the file there is not its own to remove.
    os.unlink(sock_path)
    peer.listen(sock_path)
    before = _snapshot(sock_path)

    talk.send_line(".")
    status, printed = exit_of(talk)
    assert status == 0, f"exit status {status}; printed {printed!r}"
    assert os.path.exists(sock_path), "talk.py removed a socket file it did not create"
    assert _snapshot(sock_path) == before, "talk.py touched a socket file it did not create"


def quit_with_lines_still_going_out(talk: Talk, other: Peer) -> list[bytes]:
    """Paste thousands of lines and a "." into ``talk`` while ``other`` reads nothing until
    talk.py has left the screen; then read what arrives until the hang-up. The lines pasted.

    Thousands of lines are more than the kernel holds for a socket, so at the "." most of them
    still wait in talk.py itself, and only a hang-up that lets them go out first delivers them.
    """
    lines = [b"line %d" % i for i in range(3000)]
    paste = b"".join(line + b"\r" for line in lines) + b".\r"

    def write_paste() -> None:  # from a thread: the pty takes a few KiB at a time
        view = memoryview(paste)
        while view:
            view = view[os.write(talk.child.child_fd, view) :]

    writer = threading.Thread(target=write_paste, daemon=True)
    writer.start()
    # The terminal is given back on the way out, before the socket is closed.
    talk.wait_until(lambda t: t.left_alternate_screen, DEADLINE, "talk.py to leave the screen")
    writer.join(DEADLINE)
    assert other.wait_closed(DEADLINE), "talk.py did not hang up"
    return lines


def test_lines_typed_just_before_quitting_reach_a_slow_reader(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    lines = quit_with_lines_still_going_out(talk, other)
    received = other.received.split(b"\n")
    assert received[-1] == b"", f"a line was cut short: {received[-1]!r}"
    assert len(received) - 1 == len(lines), f"{len(received) - 1} of {len(lines)} lines arrived"
    assert received[:-1] == lines, "lines arrived changed or out of order"


def test_quitting_while_lines_are_still_going_out_ends_cleanly(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    quit_with_lines_still_going_out(talk, other)
    status, printed = exit_of(talk)
    assert (status, printed) == (0, "talk: you ended the conversation")


# -- 13. a terminal too small --------------------------------------------------------------------


def test_too_small_terminal_says_so_then_works_after_resize(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk = spawn(sock_path, rows=3, cols=12)
    talk.wait_until(lambda t: "too small" in flowing(t.display), DEADLINE, "a 'too small' message")
    other = peer(sock_path)
    other.send_line("sent while small")
    wait_taken(other)
    talk.type("typed while small")
    # Ctrl-L repaints even now. It comes after those keys: once the repaint of a screen that
    # something else wiped is seen, talk.py has read them all while it was too small.
    talk.write_from_outside(b"\x1b[H\x1b[2J")
    talk.wait_until(lambda t: t.text().strip() == "", DEADLINE, "the screen wiped from outside")
    talk.press("ctrl_l")
    talk.wait_until(
        lambda t: "too small" in flowing(t.display), DEADLINE, "the note painted by Ctrl-L"
    )

    talk.resize(24, 80)
    status = talking_to(os.getpid())
    talk.wait_until(
        lambda t: t.row(0).startswith(status) and drawn(t),
        DEADLINE,
        "the normal layout after the resize",
    )
    assert input_row(talk) == "", "keys typed while the input line was not shown were taken"
    assert_layout(talk, talk.row(0))
    assert "<you> sent while small" in conversation(talk), talk.text()
    assert talk.child.isalive(), "talk.py ended"


# -- 14. no usable terminal ----------------------------------------------------------------------


def test_stdin_not_a_terminal_is_a_clear_error(sock_path: str) -> None:
    result = subprocess.run(
        [sys.executable, str(TALK_PY), "--socket", sock_path],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=child_env(),
        timeout=DEADLINE,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, f"exit status {result.returncode}; stderr {stderr!r}"
    assert stderr == "talk: standard input is not a terminal\n", stderr
    assert not os.path.exists(sock_path), "a socket was created without a terminal"


def test_unknown_terminal_type_is_a_clear_error(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path, env=child_env(TERM="nosuchterm"))
    printed = exit_with_one_line(talk, "talk: unknown terminal type")
    assert "Traceback" not in talk.output, printed
    assert not os.path.exists(sock_path), "a socket was created without a usable terminal"


# -- 15. an unexpected exception ------------------------------------------------------------------

# A wrapper around talk.main() that breaks one method when it meets "boom".
_CRASHING = """\
import sys
sys.path.insert(0, {repo!r})
import talk

cls = talk.{cls}
original = cls.{method}


def broken(self, *args) -> None:
    if {condition}:
        raise RuntimeError("boom")
    return original(self, *args)


cls.{method} = broken
sys.exit(talk.main(sys.argv[1:]))
"""

CRASHES = {
    # an event callback on the PubPen
    "incoming_callback": ("Display", "show_message", 'args[0] == "boom"', "peer"),
    # an asyncio protocol method, called by the loop directly
    "protocol": ("TalkProtocol", "data_received", 'b"boom" in args[0]', "peer"),
    # the keyboard side
    "key_handler": ("Display", "send_line", 'self.input.text == "boom"', "keyboard"),
}


@pytest.mark.parametrize("where", CRASHES)
def test_unexpected_exception_restores_terminal_before_traceback(
    spawn: Spawner, peer: Peers, sock_path: str, tmp_path: Path, where: str
) -> None:
    cls, method, condition, source = CRASHES[where]
    wrapper = tmp_path / "crashing_talk.py"
    wrapper.write_text(
        _CRASHING.format(repo=str(REPO_ROOT), cls=cls, method=method, condition=condition)
    )
    talk, other = start_with_peer(spawn, peer, sock_path, program=wrapper)
    other.send_line("fine so far")
    wait_last_row(talk, "<you> fine so far")

    if source == "peer":
        other.send_line("boom")
    else:
        talk.send_line("boom")
    status, printed = exit_of(talk)

    assert status == 1, f"exit status {status}; printed {printed!r}"
    assert terminal_restored(talk), "the terminal was not restored"
    assert "Traceback" in printed and "RuntimeError: boom" in printed, (
        f"no traceback after the terminal was restored; printed after it: {printed!r}"
    )
    restored_at = bytes(talk.raw).rfind(LEAVE_ALTERNATE_SCREEN)
    assert b"Traceback" not in talk.raw[:restored_at], "traceback printed before the restore"
