"""End-to-end tests of a conversation's harder moments (issue 8): the other side leaving,
reading back, size changes without SIGWINCH, pasting, Alt keys, and being told.

The real talk.py runs in a pseudo-terminal (tests/terminal.py); the other side is a plain
socket or a second talk.py. Layout: row 0 status, row 1 dashes, the conversation, row R-2
the rule, row R-1 the input line.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
from terminal import (
    LOGIN,
    TALK_PY,
    Peer,
    Peers,
    Spawner,
    Talk,
    child_env,
    conversation,
    drawn,
    input_row,
    start_server,
    start_with_peer,
    talking_to,
    wait_for_status,
    wait_for_waiting,
    wait_until,
    waiting,
)

PROMPTLY = 5.0  # from a trigger to the program's exit; the machine is shared and noisy
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
PASTE_ON, PASTE_OFF = b"\x1b[?2004h", b"\x1b[?2004l"
CTRL_END = b"\x1b[1;5F"  # what an xterm sends for Ctrl-End
PEER_LEFT = f"{LOGIN} (pid {os.getpid()}) left - press any key to close"


def rule(talk: Talk) -> str:
    return talk.row(talk.rows - 2)


def shows(text: str) -> Callable[[Talk], bool]:
    """For ``Talk.wait_until``: ``text`` is somewhere on the screen, within one row."""
    return lambda talk: any(text in row for row in talk.display)


def layout_at(talk: Talk, rows: int, cols: int) -> bool:
    """talk.py's frame is drawn for a ``rows`` x ``cols`` terminal, cursor on the input line."""
    return (
        talk.row(1) == "-" * (cols - 1)
        and talk.row(rows - 2) == "=" * (cols - 1)
        and talk.cursor[1] == rows - 1
    )


def assert_closed_cleanly(talk: Talk, sock_path: str, status: int, line: str) -> None:
    assert talk.wait_exit(PROMPTLY) == status, talk.output
    assert talk.left_alternate_screen, "curses did not give the terminal back"
    assert talk.after_exit == line, talk.after_exit
    assert not os.path.exists(sock_path), "the socket file was left behind"


# -- when the other side leaves ------------------------------------------------------------------


def test_last_message_stays_readable_until_a_key_closes(
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
            and t.row(0) == PEER_LEFT
            and "<you> Room 4.12 at 3pm. Bye!" in conversation(t)
        ),
        what="the conversation redrawn at 24x60",
    )
    assert talk.child.isalive(), "talk.py ended without a key being pressed"

    talk.type("k")
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
    talk.press("enter")
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


def test_the_side_that_typed_dot_ends_at_once_and_the_other_is_told(
    spawn: Spawner, sock_path: str
) -> None:
    server = start_server(spawn, sock_path)
    client = spawn(sock_path)
    wait_for_status(server, talking_to(client.pid))
    client.send_line("Bye!")
    server.wait_until(lambda t: "<you> Bye!" in conversation(t), what="the message")
    client.send_line(".")
    assert client.wait_exit(PROMPTLY) == 0, client.output
    assert client.after_exit == "talk: you ended the conversation"

    wait_for_status(server, f"{LOGIN} (pid {client.pid}) left - press any key to close")
    assert "<you> Bye!" in conversation(server)
    server.press("enter")
    assert_closed_cleanly(server, sock_path, 0, "talk: the other side closed the connection")


# -- reading back --------------------------------------------------------------------------------


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
    # The whole of it if it fits, and no half of a hint after it; else without the pid, then
    # the login name alone, which is never cut (as long as it fits at all).
    talk.wait_until(lambda t: drawn(t), what="the whole screen")
    fitting = [s for s in (who, f"Talking to {LOGIN}", LOGIN) if len(s) <= cols - 1]
    assert fitting, f"login {LOGIN!r} is too long for this test at {cols} columns"
    assert talk.row(0) == fitting[0], talk.row(0)


def test_keys_typed_while_the_terminal_is_too_small_are_not_acted_on(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk = spawn(sock_path, rows=4, cols=12)
    talk.wait_until(
        lambda t: "small" in t.text() and "20x5)" in t.text(), what="the whole 'too small' note"
    )
    other = peer(sock_path)
    talk.type("secret")
    talk.press("enter")
    talk.type(b"\x1b[5~")  # PageUp
    # Ctrl-L repaints even now. It comes after those keys: once the repaint of a screen that
    # something else wiped is seen, talk.py has read them all while it was too small.
    talk.write_from_outside(b"\x1b[H\x1b[2J")
    talk.wait_until(lambda t: t.text().strip() == "", what="the screen wiped from outside")
    talk.press("ctrl_l")
    talk.wait_until(shows("small"), what="the 'too small' note painted again by Ctrl-L")
    talk.resize(24, 80)
    wait_for_status(talk, talking_to(os.getpid()))
    assert input_row(talk) == "", "text typed blind went into the input line"
    talk.send_line("seen")
    assert other.read_line() == b"seen\n", "something typed blind was sent before"
    talk.press("ctrl_c")
    assert_closed_cleanly(talk, sock_path, 130, "talk: interrupted")


def test_ctrl_c_works_while_the_terminal_is_too_small(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path, rows=4, cols=12)
    talk.wait_until(lambda t: "small" in t.text(), what="the 'too small' note")
    talk.press("ctrl_c")
    assert_closed_cleanly(talk, sock_path, 130, "talk: interrupted")


# -- size changes without SIGWINCH ---------------------------------------------------------------


def catches(pid: int, signum: int) -> bool:
    """Process ``pid`` has a handler for ``signum`` at the moment (its SigCgt in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    raise AssertionError(f"no SigCgt for pid {pid}")


def test_fg_after_ctrl_z_reads_the_new_size(spawn: Spawner, sock_path: str) -> None:
    # A shell with job control, as a user has: talk is its foreground job, so a resize while
    # talk is stopped signals the shell, and talk learns nothing of it but SIGCONT.
    shell_args = ["-c", "import os; os.execvp('bash', ['bash', '--norc', '--noprofile', '-i'])"]
    shell = spawn(sock_path, args=shell_args, env=child_env(PS1="$ ", HISTFILE="/dev/null"))
    shell.wait_until(shows("$"), what="the shell's prompt")
    shell.type(f"{sys.executable} {TALK_PY} --socket {sock_path}\r")
    wait_for_waiting(shell, sock_path)
    # ncurses ignores SIGTSTP while it updates the screen, so a Ctrl-Z then is lost (press it
    # again, a user would); this one comes once talk.py, the foreground job, catches it again.
    talk_pid = os.tcgetpgrp(shell.child.child_fd)
    wait_until(lambda: catches(talk_pid, signal.SIGTSTP), what="talk.py to catch SIGTSTP")
    shell.type(b"\x1a")  # Ctrl-Z
    shell.wait_until(shows("Stopped"), what="the shell saying the job stopped")
    shell.resize(30, 60)
    shell.type("fg\r")
    shell.wait_until(lambda t: layout_at(t, 30, 60), what="the layout at 30x60")
    assert shell.row(0).startswith(waiting(sock_path)[:59])
    shell.send_line(".")
    shell.wait_until(shows("talk: you ended the conversation"), what="talk's last line")


# A talk started so that it has no controlling terminal (as ``su - alice -c ...`` leaves it)
# gets no SIGWINCH: the terminal signals its foreground process group, and talk is in none.
NO_CONTROLLING_TERMINAL = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid()\n"
    "    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
    "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
)


def test_ctrl_l_reads_the_size_when_no_sigwinch_comes(spawn: Spawner, sock_path: str) -> None:
    args = ["-c", NO_CONTROLLING_TERMINAL, str(TALK_PY), "--socket", sock_path]
    talk = spawn(sock_path, args=args)
    wait_for_waiting(talk, sock_path)
    talk.resize(30, 60)
    # Keys typed after the resize are still drawn in the old 24x80 layout, on its input row 23.
    # Had a SIGWINCH come, it would be handled by the time the second key shows: the first key
    # was read no earlier than the signal, and the second one only after the first was drawn.
    talk.type("x")
    talk.wait_until(lambda t: t.row(23) == "x" and t.cursor == (1, 23), what="'x' typed")
    talk.type("y")
    talk.wait_until(lambda t: t.row(23) == "xy" and t.cursor == (2, 23), what="'xy' typed")
    assert not layout_at(talk, 30, 60), "talk heard of the resize after all: nothing to test"
    talk.press("ctrl_u")
    talk.press("ctrl_l")
    talk.wait_until(
        lambda t: layout_at(t, 30, 60) and input_row(t) == "", what="the layout at 30x60"
    )
    talk.send_line(".")
    assert talk.wait_exit(PROMPTLY) == 0


# -- pasting and keys ----------------------------------------------------------------------------


def test_pasted_text_is_sent_literally_line_by_line(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    assert PASTE_ON in talk.raw, "bracketed paste was not turned on"
    talk.type(PASTE_START + b"first line\r.\r\tindented\tx\rlast, not sent" + PASTE_END)
    sent = [other.read_line() for _ in range(3)]
    assert sent == [b"first line\n", b".\n", b"        indented        x\n"]
    talk.wait_until(lambda t: input_row(t) == "last, not sent", what="the last pasted line")
    assert talk.child.isalive(), "a pasted '.' quit"
    shown = ["<myself> first line", "<myself> .", "<myself>         indented        x"]
    talk.wait_until(lambda t: conversation(t)[:3] == shown, what="the pasted lines, as sent")
    talk.press("enter")
    assert other.read_line() == b"last, not sent\n"


def test_a_paste_arriving_in_pieces_is_still_one_paste(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    # Each piece is typed once talk.py has shown that it took the one before (only the start
    # of the paste shows nothing), so they reach it in separate reads.
    talk.type(PASTE_START + b"one\r")
    assert other.read_line() == b"one\n"
    talk.type(b".")
    talk.wait_until(lambda t: input_row(t) == ".", what="the pasted '.' in the input line")
    talk.type(b"\rtw")
    assert other.read_line() == b".\n"
    talk.wait_until(lambda t: input_row(t) == "tw", what="'tw' in the input line")
    talk.type(b"o\x1b[20")
    talk.wait_until(lambda t: input_row(t) == "two", what="the rest of the pasted text")
    talk.type(b"1~")
    talk.press("enter")
    assert other.read_line() == b"two\n"
    talk.send_line(".")  # typed, not pasted: quits
    assert_closed_cleanly(talk, sock_path, 0, "talk: you ended the conversation")


def leave_and_close(talk: Talk, other: Peer) -> None:
    other.close()
    wait_for_status(talk, PEER_LEFT)
    talk.type("x")


ENDINGS: dict[str, Callable[[Talk, Peer], None]] = {
    "dot": lambda talk, other: talk.send_line("."),
    "ctrl_c": lambda talk, other: talk.press("ctrl_c"),
    "sigterm": lambda talk, other: talk.kill(signal.SIGTERM),
    "peer_left": leave_and_close,
}


@pytest.mark.parametrize("how", ENDINGS)
def test_bracketed_paste_is_turned_off_on_every_way_out(
    spawn: Spawner, peer: Peers, sock_path: str, how: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    ENDINGS[how](talk, other)
    talk.wait_exit(PROMPTLY)
    raw = bytes(talk.raw)
    assert raw.rfind(PASTE_OFF) > raw.rfind(PASTE_ON) >= 0, "bracketed paste left on"


def test_alt_keys_move_by_word_and_never_insert_their_letter(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    talk.type("one two three")
    talk.wait_until(lambda t: input_row(t) == "one two three", what="the typed text")
    talk.type(b"\x1bb\x1bb")  # Alt-b twice: to the start of "two"
    talk.type("X")
    talk.wait_until(lambda t: input_row(t) == "one Xtwo three", what="X before 'two'")
    talk.type(b"\x1bf")  # Alt-f: to the end of "Xtwo"
    talk.type(b"\x1b\x7f")  # Alt-Backspace: delete the word before the cursor
    talk.wait_until(lambda t: input_row(t) == "one  three", what="'Xtwo' deleted")
    talk.type(b"\x1bz\x1b[57;5u\x1b[?99x\x1bOZ")  # Alt-z and sequences curses does not know
    talk.type("!")
    talk.wait_until(lambda t: input_row(t) == "one ! three", what="only the '!' inserted")
    talk.press("enter")
    assert other.read_line() == b"one ! three\n"


def test_a_tab_typed_becomes_spaces(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    talk.type("a\tb")
    talk.press("enter")
    assert other.read_line() == b"a       b\n"


# -- being told ----------------------------------------------------------------------------------


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


def test_help_and_readme_name_the_new_keys(spawn: Spawner, sock_path: str) -> None:
    helped = spawn(sock_path, args=[str(TALK_PY), "--help"])
    assert helped.wait_exit(PROMPTLY) == 0
    readme = (TALK_PY.parent / "README.md").read_text()
    help_text = " ".join(helped.output.split())
    for key in ("Ctrl-End", "Alt-b", "Alt-f", "Alt-Backspace", "any key"):
        assert key in help_text, key
        assert key in readme, key
    assert "bell" in readme
