"""End-to-end tests of a conversation: connecting, sending both ways, framing and decoding what
a peer sends, floods and backlogs, reading back, the other side leaving, and every way talk
ends (``.``, signals, a closed terminal, a crash) with the terminal given back.

The real talk.py runs in a pseudo-terminal (tests/terminal.py); the other side is a plain
socket (what ``nc -U`` would be) or a second talk.py. Nothing sleeps to synchronise: every
step waits, with a deadline, for a condition. The one condition that is not on a screen,
"talk.py has read everything the peer sent", is read from the kernel (SIOCOUTQ on the peer's
socket: bytes sent and not yet taken by the receiver).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from terminal import (
    DEADLINE,
    EXIT_WITHIN,
    LEAVE_ALTERNATE_SCREEN,
    LOGIN,
    PROMPTLY,
    REPO_ROOT,
    TALK_PY,
    Peer,
    Peers,
    Spawner,
    Talk,
    assert_closed_cleanly,
    assert_layout,
    child_env,
    conversation,
    drawn,
    exit_of,
    flowing,
    input_row,
    last_row,
    layout_at,
    message_rows,
    shows,
    start_server,
    start_with_peer,
    talk_in_a_shell,
    talking_to,
    wait_for_status,
    wait_for_waiting,
    wait_last_row,
    wait_taken,
    wait_until,
    waiting,
)

from talk import BRACKETED_PASTE_OFF, BRACKETED_PASTE_ON, CLOSE_HINTS, CUT_MARK, MAX_LINE_BYTES

CTRL_END = b"\x1b[1;5F"  # what an xterm sends for Ctrl-End


PEER_LEFT = f"{LOGIN} (pid {os.getpid()}) left - {CLOSE_HINTS[0]}"


def peer_left(cols: int) -> str:
    """The status line once this process, the peer, left: the longest way to say how to
    close that fits ``cols`` columns (a long login name leaves room for the short one)."""
    who = f"{LOGIN} (pid {os.getpid()}) left"
    return next((f"{who} - {hint}" for hint in CLOSE_HINTS if len(f"{who} - {hint}") <= cols), who)


def rule(talk: Talk) -> str:
    return talk.row(talk.rows - 2)


def test_last_message_stays_readable_until_esc_closes(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    other.send_line("Room 4.12 at 3pm. Bye!")
    other.close()

    wait_for_status(talk, PEER_LEFT)
    assert "<you> Room 4.12 at 3pm. Bye!" in conversation(talk), talk.text()
    # Still there later: a resize (no key) is drawn again with the message and the status.
    talk.resize(24, 60)
    talk.wait_until(
        lambda t: (
            layout_at(t, 24, 60)
            and t.row(0) == peer_left(60)
            and "<you> Room 4.12 at 3pm. Bye!" in conversation(t)
        ),
        what="the conversation redrawn at 24x60",
    )
    assert talk.child.isalive(), "talk.py ended without a key being pressed"

    talk.type("k")  # a key of a reply being typed: it stays, and talk with it
    talk.wait_until(lambda t: input_row(t) == "k" and drawn(t), what="the 'k' typed")
    assert talk.child.isalive(), "a letter typed closed talk"
    talk.press("escape")
    assert_closed_cleanly(talk, sock_path, 0, "talk: the other side closed the connection")


def test_after_the_peer_left_page_keys_scroll_and_nothing_is_sent(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    other.send(b"".join(b"msg %02d\n" % i for i in range(1, 41)))
    other.sock.shutdown(socket.SHUT_WR)  # it hangs up, but can still see what we send
    wait_for_status(talk, PEER_LEFT)
    talk.wait_until(lambda t: "<you> msg 40" in conversation(t), what="the last message")

    talk.press("pgup")
    talk.wait_until(lambda t: "<you> msg 10" in conversation(t) and drawn(t), what="older page")
    talk.press("pgdn")
    talk.wait_until(lambda t: "<you> msg 40" in conversation(t) and drawn(t), what="newest")
    assert talk.child.isalive(), "a page key ended talk"

    talk.type("typed after")
    talk.press("enter")  # not sent, nor lost: there is nobody to send it to
    wait_for_status(talk, f"not sent: {LOGIN} left - {CLOSE_HINTS[0]}")
    assert input_row(talk) == "typed after" and talk.child.isalive()
    talk.press("ctrl_u")
    talk.press("enter")  # Enter on an empty line closes
    assert_closed_cleanly(talk, sock_path, 0, "talk: the other side closed the connection")
    assert other.wait_closed()
    assert b"typed after" not in other.received, other.received


@pytest.mark.parametrize(
    "how, status, line",
    [
        (lambda t: t.press("ctrl_c"), 130, "talk: interrupted"),
        (lambda t: t.kill(signal.SIGTERM), 143, "talk: terminated"),
        (lambda t: t.kill(signal.SIGHUP), 129, "talk: hung up"),
    ],
    ids=["ctrl_c", "sigterm", "sighup"],
)
def test_signals_still_end_talk_at_once_after_the_peer_left(
    spawn: Spawner,
    peer: Peers,
    sock_path: str,
    how: Callable[[Talk], None],
    status: int,
    line: str,
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    other.close()
    wait_for_status(talk, PEER_LEFT)
    how(talk)
    assert_closed_cleanly(talk, sock_path, status, line)


def said_and_left(spawn: Spawner, sock_path: str, words: str) -> tuple[Talk, Talk]:
    """A talk.py waits; another joins, says ``words`` and leaves with ``.``; the first says
    who left. (the one that waited, the one that left)"""
    server = start_server(spawn, sock_path)
    client = spawn(sock_path)
    wait_for_status(server, talking_to(client.pid))
    client.send_line(words)
    server.wait_until(lambda t: f"<you> {words}" in conversation(t), what="the message")
    client.send_line(".")
    assert client.wait_exit(PROMPTLY) == 0, client.output
    wait_for_status(server, f"{LOGIN} (pid {client.pid}) left - {CLOSE_HINTS[0]}")
    return server, client


def test_the_side_that_typed_dot_ends_at_once_and_the_other_is_told(
    spawn: Spawner, sock_path: str
) -> None:
    server, client = said_and_left(spawn, sock_path, "Bye!")
    assert client.after_exit == "talk: you ended the conversation"
    assert "<you> Bye!" in conversation(server)
    server.press("enter")
    assert_closed_cleanly(server, sock_path, 0, "talk: the other side closed the connection")


def connected(spawn: Spawner, peer: Peers, sock_path: str, **kwargs: Any) -> tuple[Talk, Peer]:
    """talk.py with a plain socket connected, at any width: (talk, peer)."""
    talk = start_server(spawn, sock_path, **kwargs)
    other = peer(sock_path)
    who = talking_to(os.getpid())
    shortened = (f"Talking to {LOGIN}", LOGIN)  # what a narrow status line keeps of it
    talk.wait_until(lambda t: t.row(0).startswith(who) or t.row(0) in shortened, what=who)
    return talk, other


def scrolled_back(spawn: Spawner, peer: Peers, sock_path: str, **kwargs: Any) -> tuple[Talk, Peer]:
    """talk.py with 40 messages, scrolled back a page: (talk, peer)."""
    talk, other = connected(spawn, peer, sock_path, **kwargs)
    other.send(b"".join(b"msg %02d\n" % i for i in range(1, 41)))
    talk.wait_until(lambda t: "<you> msg 40" in conversation(t), what="the last message")
    talk.press("pgup")
    talk.wait_until(
        lambda t: "<you> msg 40" not in conversation(t) and drawn(t), what="an older page"
    )
    return talk, other


def test_sending_while_scrolled_back_shows_the_newest_and_the_line_sent(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = scrolled_back(spawn, peer, sock_path)
    talk.send_line("mine")
    assert other.read_line() == b"mine\n"
    talk.wait_until(
        lambda t: conversation(t)[-2:] == ["<you> msg 40", "<myself> mine"] and drawn(t),
        what="the newest messages and the line sent",
    )
    assert rule(talk) == "=" * (talk.cols - 1)


def test_rule_counts_what_arrived_below_and_ctrl_end_jumps_there(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = scrolled_back(spawn, peer, sock_path)
    view = conversation(talk)
    for text in ("new one", "new two", "new three"):
        other.send_line(text)
    talk.wait_until(lambda t: "3 new below" in rule(t) and drawn(t), what="'3 new below'")
    assert conversation(talk) == view, "the view moved while reading back"
    assert talk.row(talk.rows - 1) == "", "the rule spilled onto the input line"

    talk.type(CTRL_END)
    talk.wait_until(
        lambda t: conversation(t)[-1] == "<you> new three" and drawn(t), what="the newest"
    )
    assert rule(talk) == "=" * (talk.cols - 1)


def test_one_key_reaches_the_newest_after_a_flood(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = scrolled_back(spawn, peer, sock_path)
    other.send(b"".join(b"flood %04d\n" % i for i in range(2000)))
    talk.wait_until(lambda t: "2000 new below" in rule(t) and drawn(t), what="'2000 new below'")
    talk.type(CTRL_END)
    talk.wait_until(
        lambda t: conversation(t)[-1] == "<you> flood 1999" and drawn(t), what="the newest"
    )


def test_paging_down_counts_down_what_is_still_below(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = scrolled_back(spawn, peer, sock_path, rows=10)  # 6 conversation rows
    talk.press("pgup")
    talk.wait_until(lambda t: conversation(t)[0] == "<you> msg 25" and drawn(t), what="2 pages up")
    other.send(b"".join(b"late %d\n" % i for i in range(1, 8)))
    talk.wait_until(lambda t: "7 new below" in rule(t) and drawn(t), what="'7 new below'")
    talk.press("pgdn", times=2)  # back to the old newest: the 7 are still all below
    talk.wait_until(lambda t: "<you> msg 40" in conversation(t) and drawn(t), what="msg 40")
    assert "7 new below" in rule(talk), rule(talk)
    talk.press("pgdn")  # 5 rows down: 5 of them seen, 2 below
    talk.wait_until(lambda t: "2 new below" in rule(t) and drawn(t), what="'2 new below'")
    talk.press("pgdn")
    talk.wait_until(lambda t: rule(t) == "=" * (t.cols - 1) and drawn(t), what="the plain rule")
    assert conversation(talk)[-1] == "<you> late 7"


@pytest.mark.parametrize("cols", [20, 24, 30])
def test_at_narrow_widths_the_rule_stays_on_its_row(
    spawn: Spawner, peer: Peers, sock_path: str, cols: int
) -> None:
    talk, other = scrolled_back(spawn, peer, sock_path, rows=12, cols=cols)
    talk.wait_until(lambda t: "more" in rule(t) and drawn(t), what="a rule that says more below")
    assert input_row(talk) == "", "the rule spilled onto the input line"
    assert len(rule(talk)) == cols - 1, rule(talk)
    other.send_line("new")
    talk.wait_until(lambda t: "1 new" in rule(t) and drawn(t), what="'1 new'")
    assert input_row(talk) == "" and len(rule(talk)) == cols - 1, talk.text()


@pytest.mark.parametrize("cols", [20, 30])
def test_at_narrow_widths_the_status_line_keeps_who(
    spawn: Spawner, peer: Peers, sock_path: str, cols: int
) -> None:
    talk, _other = connected(spawn, peer, sock_path, rows=12, cols=cols)
    who = talking_to(os.getpid())
    # The whole of it if it fits (the status line has every column), and no half of a hint
    # after it; else without the pid, then the login name alone, which is never cut (as long
    # as it fits at all).
    talk.wait_until(lambda t: drawn(t), what="the whole screen")
    fitting = [s for s in (who, f"Talking to {LOGIN}", LOGIN) if len(s) <= cols]
    assert fitting, f"login {LOGIN!r} is too long for this test at {cols} columns"
    assert talk.row(0) == fitting[0], talk.row(0)


def leave_and_close(talk: Talk, other: Peer) -> None:
    other.close()
    wait_for_status(talk, PEER_LEFT)
    talk.press("escape")


WAYS_OUT: dict[str, Callable[[Talk, Peer], None]] = {
    "dot": lambda talk, other: talk.send_line("."),
    "ctrl_c": lambda talk, other: talk.press("ctrl_c"),
    "sigterm": lambda talk, other: talk.kill(signal.SIGTERM),
    "peer_left": leave_and_close,
}


@pytest.mark.parametrize("how", WAYS_OUT)
def test_bracketed_paste_is_turned_off_on_every_way_out(
    spawn: Spawner, peer: Peers, sock_path: str, how: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    WAYS_OUT[how](talk, other)
    talk.wait_exit(PROMPTLY)
    raw = bytes(talk.raw)
    assert raw.rfind(BRACKETED_PASTE_OFF) > raw.rfind(BRACKETED_PASTE_ON) >= 0, (
        "bracketed paste left on"
    )


def test_while_waiting_the_status_line_says_how_to_quit(spawn: Spawner, sock_path: str) -> None:
    # 80 columns, or more if a long TMPDIR leaves no room for the short hint after the path.
    cols = max(80, len(waiting(sock_path) + " - type . to quit") + 1)
    talk = start_server(spawn, sock_path, cols=cols)
    wait_for_status(talk, "to quit")
    assert talk.row(0).startswith(waiting(sock_path)), talk.row(0)


def test_the_bell_rings_once_when_someone_joins_a_waiting_talk(
    spawn: Spawner, sock_path: str
) -> None:
    # The bell goes out before the screen update it comes with: once an update is seen, the
    # bell of it, if any, has arrived too.
    server = start_server(spawn, sock_path)
    server.type("x")  # one more update while waiting
    server.wait_until(lambda t: input_row(t) == "x", what="the key typed while waiting")
    assert b"\x07" not in server.raw, "rang before anyone came"
    server.press("ctrl_u")
    client = spawn(sock_path)
    wait_for_status(server, talking_to(client.pid))
    wait_for_status(client, talking_to(server.pid))
    client.send_line("hi")
    server.wait_until(lambda t: "<you> hi" in conversation(t) and drawn(t), what="the message")
    client.wait_until(lambda t: "<myself> hi" in conversation(t) and drawn(t), what="the line")
    assert server.raw.count(b"\x07") == 1, "the waiting side should ring exactly once"
    assert b"\x07" not in client.raw, "the caller did not wait: no bell"


def terminal_restored(talk: Talk) -> bool:
    """curses gave the terminal back: alternate screen left and line mode (ICANON) back on.

    The pty's modes are read through the master side, which shares them with the slave.
    """
    lflag = termios.tcgetattr(talk.child.child_fd)[3]
    return talk.left_alternate_screen and bool(lflag & termios.ICANON)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


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


def test_peer_line_is_cut_at_64_kib_with_visible_mark(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)

    other.send(b"A" * MAX_LINE_BYTES + b"\n")
    other.send_line("after the longest whole line")
    wait_last_row(talk, "<you> after the longest whole line")
    assert "[line cut]" not in talk.text(), f"a 64 KiB line was cut:\n{talk.text()}"

    other.send(b"B" * MAX_LINE_BYTES + b"C" * 1000 + b"\n")
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
    talk.wait_until(lambda t: " left - Esc" in t.row(0), PROMPTLY, "the peer's leaving")
    talk.press("escape")
    status, printed = exit_of(talk, PROMPTLY)
    assert status == 0, f"exit status {status}; printed {printed!r}"
    assert terminal_restored(talk), "the terminal was not restored"
    assert talk.last_line == "talk: the other side closed the connection", printed
    assert not os.path.exists(sock_path), "the socket file was left behind"


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


LINE = 1000  # bytes on the wire per line pasted below, newline included


def paste_until_not_sent(talk: Talk, most: int) -> int:
    """Paste numbered lines until the status line says one was not sent; how many were pasted.

    The screen is read between lines: curses must be able to write, or it stops reading keys.
    """
    pasted = most
    for n in range(most):
        talk.type(f"{n:05d} ".encode() + b"y" * (LINE - 7) + b"\r")
        talk.pump(0)
        if "not sent" in talk.row(0):
            pasted = n + 1
            break
    talk.wait_until(lambda t: "not sent" in t.row(0), DEADLINE, "a 'not sent' note")
    # Lines typed after the first one not sent may not have been read yet: wait until they
    # have, or someone connecting now would get some of them after the gap.
    talk.type("typed last")
    talk.wait_for_row(talk.rows - 1, "typed last")
    talk.press("ctrl_u")
    talk.wait_until(lambda t: t.row(t.rows - 1) == "", DEADLINE, "an empty input line")
    return pasted


def assert_keys_work_and_dot_quits_promptly(talk: Talk) -> None:
    """The keyboard still answers (what is typed shows), and ``.`` ends talk at once."""
    talk.type("still typing")
    talk.wait_for_row(talk.rows - 1, "still typing")
    assert_quits_promptly(talk)


def assert_quits_promptly(talk: Talk) -> None:
    talk.press("ctrl_u")
    talk.type(".")
    talk.wait_for_row(talk.rows - 1, ".")
    pressed = time.monotonic()
    talk.press("enter")
    status, printed = exit_of(talk)
    assert status == 0, f"exit status {status}; printed {printed!r}"
    assert talk.eof_at is not None
    took = talk.eof_at - pressed
    assert took < EXIT_WITHIN, f"'.' took {took:.2f}s to end talk.py"
    assert LEAVE_ALTERNATE_SCREEN in talk.raw, "the terminal was not restored"


def test_peer_that_never_reads_gets_a_bounded_backlog_and_keys_still_work(
    spawn_screen: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, _other = start_with_peer(spawn_screen, peer, sock_path)  # it never reads
    # About 250 KiB fit in the kernel, 64 KiB in asyncio's buffer, 256 KiB in talk.py's queue.
    pasted = paste_until_not_sent(talk, 2000)
    assert "they are not reading" in talk.row(0), talk.text()
    assert pasted < 1500, f"the note came only after {pasted} KB for a peer that does not read"

    assert_keys_work_and_dot_quits_promptly(talk)


def test_lines_typed_before_anyone_connects_are_bounded_and_kept_in_order(
    spawn_screen: Spawner, peer: Peers, sock_path: str
) -> None:
    talk = start_server(spawn_screen, sock_path)
    pasted = paste_until_not_sent(talk, 400)
    assert "nobody is connected" in talk.row(0), talk.text()

    other = peer(sock_path)
    wait_for_status(talk, talking_to(os.getpid()))
    talk.send_line("last")  # goes out after whatever was kept
    got = []
    while (line := other.read_line()) != b"last\n":
        got.append(line)
    numbers = [int(line[:5]) for line in got]
    assert numbers == list(range(len(got))), "the lines kept are not the first ones, in order"
    assert 0 < len(got) <= 300 and len(got) < pasted, f"{len(got)} of {pasted} lines kept"
    assert all(len(line) == LINE for line in got), "a line was cut"

    assert_keys_work_and_dot_quits_promptly(talk)


def test_a_conversation_that_ends_in_an_error_exits_non_zero(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    listener = peer.listen(sock_path)
    talk = spawn(sock_path)
    other = listener.accept(DEADLINE)
    wait_for_status(talk, talking_to(os.getpid()))
    talk.send_line("a line the other side never reads")
    talk.wait_until(lambda t: "never reads" in t.text() and drawn(t), DEADLINE, "the line")
    # Closing with unread data resets the connection: talk's next read fails (ECONNRESET).
    wait_until(lambda: unread_by(other) > 0, DEADLINE, "the line to reach the peer")
    other.close()
    # The conversation stays on the screen, saying what went wrong, until a key closes it.
    wait_for_status(talk, "connection failed: ")
    wait_for_status(talk, CLOSE_HINTS[-1])  # the shortest hint, which the news leaves room for
    talk.press("escape")
    status = talk.wait_exit(DEADLINE)
    assert status == 1, f"exit status {status}; printed {talk.after_exit!r}"
    assert talk.last_line.startswith("talk: connection lost: "), talk.after_exit


def unread_by(peer: Peer) -> int:
    """Bytes waiting in the peer's receive queue (FIONREAD)."""
    out = fcntl.ioctl(peer.sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", out)[0])


def start_pair(spawn: Spawner, path: str, **kwargs: Any) -> tuple[Talk, Talk]:
    """Two talk.py on ``path``, connected to each other: (server, client), status lines whole."""
    server = start_server(spawn, path, **kwargs)
    client = spawn(path, **kwargs)
    wait_for_status(client, talking_to(server.pid))
    wait_for_status(server, talking_to(client.pid))
    return server, client


def close_after_peer_left(talk: Talk) -> float:
    """Wait until the status line says the other side left; press Esc to close. The time."""
    wait_for_status(talk, f" left - {CLOSE_HINTS[0]}")
    assert talk.child.isalive(), "talk.py ended before a key was pressed"
    trigger = time.monotonic()
    talk.press("escape")
    return trigger


def assert_ended(talk: Talk, trigger_time: float, reason: str, status: int = 0) -> None:
    """talk.py exited soon after ``trigger_time`` with ``status``, terminal restored, ``reason``."""
    assert talk.wait_exit(timeout=10) == status, talk.output
    assert talk.eof_at is not None
    took = talk.eof_at - trigger_time
    assert took < EXIT_WITHIN, f"exit took {took:.2f}s"
    assert talk.left_alternate_screen, "curses did not give the terminal back (no rmcup)"
    assert talk.after_exit == reason, talk.after_exit
    assert any(reason in row for row in talk.display), talk.text()


def test_first_is_server_second_connects_and_both_see_the_other(
    spawn: Spawner, sock_path: str
) -> None:
    server = spawn(sock_path)
    wait_for_waiting(server, sock_path)
    # While waiting, the status line also says how to quit: the short hint fits 80 columns,
    # unless a long TMPDIR makes the path alone fill the status line, which is then cut.
    hinted = waiting(sock_path) + " - type . to quit"
    if len(hinted) < server.cols:
        wait_for_status(server, hinted)
        assert server.row(0) == hinted
    wait_until(lambda: os.path.exists(sock_path), what="the socket file")
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)

    client = spawn(sock_path)
    quit_hint = " - type . alone on a line to quit"
    # The whole status line, not just its start: under load the hint arrives after the name.
    wait_for_status(client, talking_to(server.pid))
    wait_for_status(server, talking_to(client.pid))
    assert client.row(0) == talking_to(server.pid) + quit_hint
    assert server.row(0) == talking_to(client.pid) + quit_hint


def test_plain_socket_peer_shows_the_test_process_pid_whatever_it_claims(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    status = talk.row(0)
    assert status.startswith(talking_to(os.getpid()))

    sock.send_line("Talking to mallory (pid 1) - I am someone else")
    talk.wait_until(
        lambda t: "<you> Talking to mallory (pid 1) - I am someone else" in t.display,
        what="the claim shown as a message",
    )
    assert talk.row(0) == status


def test_enter_sends_both_ways_between_two_instances(spawn: Spawner, sock_path: str) -> None:
    server, client = start_pair(spawn, sock_path)

    server.send_line("hello from the server")
    server.wait_until(lambda t: t.row(2) == "<myself> hello from the server", what="own line")
    client.wait_until(lambda t: t.row(2) == "<you> hello from the server", what="their line")

    client.send_line("and hello back")
    # The line shows up and the input line empties in one update; wait for both to arrive.
    client.wait_until(
        lambda t: t.row(3) == "<myself> and hello back" and input_row(t) == "",
        what="own line and an empty input line",
    )
    server.wait_until(lambda t: t.row(3) == "<you> and hello back", what="their line")
    assert input_row(server) == "" and input_row(client) == ""


def test_empty_line_sends_nothing(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    talk.press("enter")
    talk.send_line("real")
    assert sock.read_line() == b"real\n"
    talk.wait_until(lambda t: t.row(2) == "<myself> real", what="the line in row 2")
    assert conversation(talk)[1:] == [""] * (talk.rows - 5)


def test_dot_quits_and_is_not_sent(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    trigger = time.monotonic()
    talk.send_line(".")
    assert sock.wait_closed(), "talk.py did not close the connection after '.'"
    assert sock.received == b""
    assert_ended(talk, trigger, "talk: you ended the conversation")


def test_two_messages_in_one_send_are_two_lines(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send(b"one\ntwo\n")
    talk.wait_until(lambda t: t.row(3) == "<you> two", what="the second message")
    assert conversation(talk)[:3] == ["<you> one", "<you> two", ""]


def _let_talk_read_what_was_sent(talk: Talk) -> None:
    """Make sure talk.py has read what the test already sent, without sleeping.

    The bytes are in talk.py's socket before this key is typed, so once the key shows on the
    screen the event loop has also seen the socket readable.
    """
    talk.type("x")
    talk.wait_until(lambda t: input_row(t) == "x", what="the typed x")
    talk.press("backspace")
    talk.wait_until(lambda t: input_row(t) == "", what="the x rubbed out")


def test_message_split_across_sends_shows_once(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send(b"ab")
    _let_talk_read_what_was_sent(talk)
    sock.send(b"cd\n")
    talk.wait_until(lambda t: "<you> abcd" in t.display, what="<you> abcd")
    assert conversation(talk).count("<you> abcd") == 1
    assert [row for row in conversation(talk) if row] == ["<you> abcd"]


def test_multibyte_char_split_across_sends(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send(b"caf\xc3")
    _let_talk_read_what_was_sent(talk)
    sock.send(b"\xa9\n")
    talk.wait_until(lambda t: t.row(2) == "<you> café", what="<you> café")


def test_invalid_utf8_shows_replacement_character(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send(b"a\xffb\n")
    talk.wait_until(lambda t: t.row(2) != "" and drawn(t), what="the whole message")
    assert talk.row(2) == "<you> a\ufffdb"


def test_many_messages_scroll_and_page_up_down(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send(b"".join(b"msg %02d\n" % i for i in range(1, 46)))
    newest = [f"<you> msg {i:02d}" for i in range(26, 46)]  # 20 conversation rows in 24
    talk.wait_until(lambda t: conversation(t) == newest, what="the 20 newest messages")

    def older_page(t: Talk) -> bool:
        rows = message_rows(t)
        return len(rows) == t.rows - 4 and rows == sorted(rows) and rows[0] < "<you> msg 26"

    talk.press("pgup")
    talk.wait_until(older_page, what="a full page of older messages, in order")
    assert all(row.startswith("<you> msg ") for row in message_rows(talk))

    talk.press("pgup", times=3)
    # Wait for the whole page, not just its first row: the screen arrives in pieces.
    oldest = [f"<you> msg {i:02d}" for i in range(1, 21)]  # a full page, in order
    talk.wait_until(
        lambda t: message_rows(t) == oldest and drawn(t), what="the oldest page of messages"
    )
    assert talk.row(1) == "-" * (talk.cols - 1)
    # The contract says row R-2 is '=' * (C-1); while scrolled back talk.py writes
    # "more below: PageDown" into it. Checked loosely here (reported), strictly below.
    separator = talk.row(talk.rows - 2)
    assert len(separator) == talk.cols - 1 and separator[:3] == separator[-3:] == "===", separator

    talk.press("pgdn", times=4)
    # The rule under the conversation is written after it: wait for the whole update.
    talk.wait_until(
        lambda t: conversation(t) == newest and drawn(t), what="back to the newest messages"
    )
    assert_layout(talk)


def test_dot_ends_both_instances_and_removes_the_socket(spawn: Spawner, sock_path: str) -> None:
    server, client = start_pair(spawn, sock_path)
    trigger = time.monotonic()
    client.send_line(".")
    assert_ended(client, trigger, "talk: you ended the conversation")
    # The other side keeps the conversation on screen until a key is pressed.
    trigger = close_after_peer_left(server)
    assert_ended(server, trigger, "talk: the other side closed the connection")
    assert not os.path.exists(sock_path)


def test_server_ends_when_the_socket_peer_closes(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.close()
    trigger = close_after_peer_left(talk)
    assert_ended(talk, trigger, "talk: the other side closed the connection")
    assert not os.path.exists(sock_path)


def test_server_ends_when_the_other_talk_is_killed(spawn: Spawner, sock_path: str) -> None:
    server, client = start_pair(spawn, sock_path)
    client.kill(signal.SIGKILL)
    trigger = close_after_peer_left(server)
    assert_ended(server, trigger, "talk: the other side closed the connection")
    assert not os.path.exists(sock_path)


def test_client_ends_when_the_server_goes_away(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    listener = peer.listen(sock_path)
    talk = spawn(sock_path)
    server = listener.accept()
    talk.wait_for_row(0, talking_to(os.getpid()))
    server.close()
    trigger = close_after_peer_left(talk)
    assert_ended(talk, trigger, "talk: the other side closed the connection")
    assert os.path.exists(sock_path), "the client removed a socket file that is not its own"


def test_third_party_is_turned_away_and_the_two_keep_talking(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    server, client = start_pair(spawn, sock_path)
    statuses = server.row(0), client.row(0)

    third = spawn(sock_path)
    assert third.wait_exit() == 1, third.output

    intruder = peer(sock_path)
    assert intruder.read_line().startswith(b"talk: busy")
    assert intruder.wait_closed()

    server.send_line("still here?")
    client.wait_until(lambda t: t.row(2) == "<you> still here?", what="the message")
    client.send_line("yes")
    server.wait_until(lambda t: t.row(3) == "<you> yes", what="the answer")
    assert (server.row(0), client.row(0)) == statuses

    assert third.last_line == (
        f"talk: the program at {sock_path} ({LOGIN}'s) says it is busy: someone is already "
        "talking on this socket; use --socket PATH to start another conversation"
    ), third.after_exit


# -- the end of a conversation, and coming back --------------------------------------------------


def test_a_reply_half_typed_when_the_other_side_leaves_is_kept_and_nothing_reaches_the_shell(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    shell = talk_in_a_shell(spawn, sock_path)
    other = peer(sock_path)
    wait_for_status(shell, talking_to(os.getpid()))
    shell.type("see you to")
    other.close()  # they leave in the middle of the reply
    wait_for_status(shell, PEER_LEFT)
    shell.type("morrow")
    shell.press("enter")
    wait_for_status(shell, f"not sent: {LOGIN} left")
    assert input_row(shell) == "see you tomorrow", "the reply was not kept whole"
    # Ctrl-U, then Enter on the empty line closes; what is typed right after it, in the same
    # breath, is talk's to drop, not the shell's to run.
    shell.type(b"\x15\r" + b"echo LEAKED-$((6*7))\r")
    shell.wait_until(shows("talk: the other side closed the connection"), what="talk's last line")
    shell.type("echo done-$((6*7))\r")
    shell.wait_until(shows("done-42"), what="the shell taking commands again")
    assert "LEAKED-42" not in shell.text(), shell.text()


def test_the_other_side_calling_again_starts_a_new_conversation_on_the_same_screen(
    spawn: Spawner, sock_path: str
) -> None:
    server, _first = said_and_left(spawn, sock_path, "Bye for now")

    again = spawn(sock_path)  # not told it is busy: the conversation there was over
    wait_for_status(again, talking_to(server.pid))
    wait_for_status(server, f"{LOGIN} (pid {again.pid}) is back - type . alone on a line to quit")
    assert "<you> Bye for now" in conversation(server), "the old conversation was lost"
    again.send_line("I'm back")
    server.wait_until(lambda t: "<you> I'm back" in conversation(t), what="the new message")
    server.send_line("welcome back")
    again.wait_until(lambda t: "<you> welcome back" in conversation(t), what="the answer")
    server.send_line(".")
    assert server.wait_exit(PROMPTLY) == 0, server.output
    wait_for_status(again, f"{LOGIN} (pid {server.pid}) left")
