"""End-to-end tests of what talk.py draws: the layout, width truth, bold own lines, terminals
too small, 0x0, without cursor addressing, and the C locale.

The real talk.py runs in a pseudo-terminal (see terminal.py) and the screen is read through
pyte. Layout: row 0 status, row 1 dashes, rows 2..R-3 the conversation, row R-2 the rule,
row R-1 the input line.

Width truth: a sample of code points chosen to cover every way width tables disagree
(unicodedata against the C library, the C library against the terminal, wide, combining and
spacing marks, unassigned, private use, surrogates, controls) is sent by a peer and drawn at
80 and at 23 columns: every conversation row must start with ``<you> `` or with indentation,
and the layout must stay whole. The whole code space is swept at unit level in
test_screen.py. pyte's width tables (the ``wcwidth`` package) are not the C library's: exactly
the situation of a user whose terminal disagrees with curses.
"""

from __future__ import annotations

import contextlib
import locale
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyte
import pytest
from terminal import (
    DEADLINE,
    ENTER_ALTERNATE_SCREEN,
    EXIT_WITHIN,
    LEAVE_ALTERNATE_SCREEN,
    LOGIN,
    PROMPTLY,
    REPO_ROOT,
    TALK_PY,
    Peers,
    Spawner,
    Talk,
    assert_closed_cleanly,
    assert_layout,
    child_env,
    conversation,
    drawn,
    exit_of,
    exit_with_one_line,
    flowing,
    input_row,
    last_row,
    layout_at,
    libc_wcwidth,
    message_rows,
    news_below,
    shows,
    squeezed,
    start_server,
    start_with_peer,
    talk_in_a_shell,
    talking_to,
    wait_for_status,
    wait_for_waiting,
    wait_last_row,
    wait_taken,
    wait_until,
    waiting_status,
)

from talk import BRACKETED_PASTE_OFF, BRACKETED_PASTE_ON, MIN_COLS, MIN_ROWS, QUIT_HINTS


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


def test_fg_after_ctrl_z_reads_the_new_size(spawn: Spawner, sock_path: str) -> None:
    # talk is the shell's foreground job, so a resize while talk is stopped signals the shell,
    # and talk learns nothing of it but SIGCONT.
    shell = talk_in_a_shell(spawn, sock_path)
    shell.type(b"\x1a")  # Ctrl-Z
    shell.wait_until(shows("Stopped"), what="the shell saying the job stopped")
    shell.resize(30, 60)
    shell.type("fg\r")
    shell.wait_until(lambda t: layout_at(t, 30, 60), what="the layout at 30x60")
    # Drawn for 60 columns: the news said shorter if need be, how to quit still there.
    assert shell.row(0) == waiting_status(sock_path, 60)
    shell.send_line(".")
    shell.wait_until(shows("talk: you ended the conversation"), what="talk's last line")


def said_stopped(shell: Talk, times: int) -> bool:
    """The shell has said ``times`` times that its job stopped."""
    return bytes(shell.raw).count(b"Stopped") == times


def stopped(pid: int) -> bool:
    """Process ``pid`` is stopped (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rpartition(")")[2].split()[0] == "T"


def ignores(pid: int, signum: int) -> bool:
    """Process ``pid`` ignores ``signum`` at the moment (its SigIgn in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    raise AssertionError(f"no SigIgn for pid {pid}")


#: What xterm-256color's terminfo sends for each mode talk changes: (how talk leaves it while
#: it runs, how the shell has it).
MODES = {
    "autowrap": (b"\x1b[?7l", b"\x1b[?7h"),
    "bracketed paste": (BRACKETED_PASTE_ON, BRACKETED_PASTE_OFF),
    "keypad": (b"\x1b[?1h\x1b=", b"\x1b[?1l\x1b>"),
    "alternate screen": (ENTER_ALTERNATE_SCREEN, LEAVE_ALTERNATE_SCREEN),
}


def modes_set(raw: bytes) -> dict[str, bool]:
    """For each of MODES: whether the last word on it in ``raw`` was talk's (True)."""
    return {mode: raw.rfind(on) > raw.rfind(off) for mode, (on, off) in MODES.items()}


def test_ctrl_z_gives_back_every_mode_and_fg_takes_them_again(
    spawn: Spawner, sock_path: str
) -> None:
    shell = talk_in_a_shell(spawn, sock_path)
    assert modes_set(bytes(shell.raw)) == dict.fromkeys(MODES, True)
    shell.type(b"\x1a")  # Ctrl-Z
    shell.wait_until(shows("Stopped"), what="the shell saying the job stopped")
    # What talk sent before the shell took over again (the shell sets modes of its own).
    given_back = bytes(shell.raw).rpartition(b"Stopped")[0]
    assert modes_set(given_back) == dict.fromkeys(MODES, False), "the shell got less back"
    shell.type("fg\r")
    shell.wait_until(lambda t: modes_set(bytes(t.raw)) == dict.fromkeys(MODES, True) and drawn(t))
    shell.type("ac")
    shell.press("left")  # the cursor keys work as before
    shell.type("b")
    shell.wait_until(lambda t: input_row(t) == "abc" and t.cursor == (2, 23), what="'abc'")
    shell.press("ctrl_u")
    shell.send_line(".")
    shell.wait_until(shows("talk: you ended the conversation"), what="talk's last line")
    given_back = bytes(shell.raw).rpartition(b"talk: you ended")[0]
    assert modes_set(given_back) == dict.fromkeys(MODES, False)


def test_no_ctrl_z_is_lost_while_the_screen_is_being_updated(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    shell = talk_in_a_shell(spawn, sock_path)
    talk_pid = os.tcgetpgrp(shell.child.child_fd)
    other = peer(sock_path)
    shell.wait_until(shows("Talking to"), what="the peer's arrival")
    flood = threading.Event()

    def flooding() -> None:
        lines = b"".join(b"line %d of a flood that keeps the screen busy\n" % i for i in range(50))
        while not flood.is_set():
            with contextlib.suppress(OSError):
                other.send(lines)

    sender = threading.Thread(target=flooding, daemon=True)
    sender.start()
    try:
        # ncurses would ignore SIGTSTP during each screen update (and drop a Ctrl-Z then) had
        # it taken SIGTSTP over: the signal must be caught at every moment, flood or not. Those
        # moments are rare (some 30 in 3 s of flood, measured): look for 3 s.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert not ignores(talk_pid, signal.SIGTSTP), "SIGTSTP ignored: a Ctrl-Z now is lost"
            shell.pump(0)
        for n in range(1, 6):
            shell.type(b"\x1a")  # one Ctrl-Z, pressed once, in the middle of the flood
            shell.wait_until(lambda _: stopped(talk_pid), PROMPTLY, "talk.py to stop on Ctrl-Z")
            shell.wait_until(partial(said_stopped, times=n), what="the shell to take it back")
            shell.type("fg\r")
            shell.wait_until(lambda _: not stopped(talk_pid), PROMPTLY, "talk.py to go on")
    finally:
        flood.set()
        sender.join(DEADLINE)


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


CHUNK = 40  # code points per line sent


def bold_cells(talk: Talk, y: int) -> list[bool]:
    """For each non-blank cell of row ``y``: is it bold?"""
    line = talk.screen.buffer[y]
    return [bool(line[x].bold) for x in range(talk.cols) if line[x].data.strip()]


def _unicodedata_width(ch: str) -> int:
    """How wide the unicodedata tables say: what talk.py measured with before."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def disagreeing_sample() -> list[int]:
    """A few thousand code points covering every class where width tables disagree.

    All of: controls, format characters and spaces; spacing marks (Mc); code points where
    unicodedata and the C library disagree; code points the C library and the terminal (pyte's
    table) draw at different widths; code points the C library cannot draw that Python calls
    printable. And a spread of: wide, zero-width, unassigned (with every noncharacter), private
    use, surrogates.
    """
    import wcwidth  # pyte's width table: the terminal's, in these tests

    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    try:
        libc = libc_wcwidth()
        counts = {"wide": 0, "zero": 0, "Cn": 0, "Co": 0, "Cs": 0}
        every = {"wide": 101, "zero": 7, "Cn": 4099, "Co": 499, "Cs": 61}
        picked = []
        for code in range(sys.maxunicode + 1):
            ch = chr(code)
            category = unicodedata.category(ch)
            width = libc(code)
            if (
                category in ("Cc", "Cf", "Zl", "Zp", "Zs", "Mc")
                or (width >= 0 and width != _unicodedata_width(ch))
                or (width >= 0 and width != wcwidth.wcwidth(ch))
                or (width < 0 and ch.isprintable())
                or (category == "Cn" and code & 0xFFFE == 0xFFFE)
            ):
                picked.append(code)
                continue
            kind = {2: "wide", 0: "zero"}.get(width) if width >= 0 else None
            kind = category if category in ("Cn", "Co", "Cs") else kind
            if kind is not None:
                counts[kind] += 1
                if counts[kind] % every[kind] == 0:
                    picked.append(code)
        return picked
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


@pytest.fixture(scope="module")
def sample() -> list[int]:
    try:
        return disagreeing_sample()
    except locale.Error:
        pytest.skip("no C.UTF-8 locale on this system")


def assert_rows_are_from_you_or_indented(talk: Talk, status: str, where: str) -> None:
    """Every conversation row starts with "<you> " or indentation; the layout is whole."""
    for row in conversation(talk):
        # (pyte draws nothing of a run of text after a character it finds zero-width but not
        # combining, so a row can end right after "<you>".)
        if row and row != "<you>" and not row.startswith(("<you> ", " ")):
            raise AssertionError(f"after {where}, a row starts with neither:\n{talk.text()}")
    assert_layout(talk, status)
    assert input_row(talk) == "", f"the input line changed after {where}:\n{talk.text()}"


@pytest.mark.parametrize("columns", [80, 23])
def test_disagreeing_code_points_never_start_a_row_of_their_own(
    spawn_screen: Spawner, peer: Peers, sock_path: str, sample: list[int], columns: int
) -> None:
    # Tall enough that all the rows of one line of the sample are on the screen at once.
    talk = start_server(spawn_screen, sock_path, rows=40, cols=columns)
    other = peer(sock_path)
    wait_for_status(talk, "Talking to")  # 23 columns cut the rest of the status line
    status = talk.row(0)
    for n, start in enumerate(range(0, len(sample), CHUNK)):
        line = "".join(map(chr, sample[start : start + CHUNK]))
        # Surrogates cannot be UTF-8: they go as the bytes a careless encoder would send.
        other.send(line.encode("utf-8", "surrogatepass") + f"\nend {n}\n".encode())
        wait_last_row(talk, f"<you> end {n}")
        assert_rows_are_from_you_or_indented(talk, status, f"U+{sample[start]:04X}")

    talk.send_line(".")
    assert exit_of(talk)[0] == 0
    assert pyte.modes.DECAWM in talk.screen.mode, "long lines no longer wrap after talk.py"


def test_cursor_stays_after_what_is_typed_where_tables_disagree(
    spawn_screen: Spawner, peer: Peers, sock_path: str
) -> None:
    """U+4DC0.. (hexagrams): unicodedata says one column, the C library and pyte say two."""
    talk, _other = start_with_peer(spawn_screen, peer, sock_path)
    talk.type("\u4dc0" * 10 + "ok")
    talk.wait_until(lambda t: input_row(t).endswith("ok"), DEADLINE, "the typed text")
    assert talk.cursor == (22, talk.rows - 1), f"cursor at {talk.cursor}:\n{talk.text()}"


def test_own_lines_are_bold_and_nothing_a_peer_sends_is(
    spawn_screen: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn_screen, peer, sock_path)
    talk.send_line("my own line")
    wait_last_row(talk, "<myself> my own line")
    other.send_line("<myself> forged, with \x1b[1mbold\x1b[0m asked for")
    other.send_line("x" * (talk.cols - len("<you> x")) + " <myself> wrapped forgery")
    other.send_line("end")
    wait_last_row(talk, "<you> end")

    for y in range(talk.rows):
        row, bold = talk.row(y), bold_cells(talk, y)
        if row.startswith("<myself> my own line"):
            assert all(bold), f"your own line is not all bold: row {y} {row!r}"
        else:
            assert not any(bold), f"bold text that is not yours: row {y} {row!r}"
    assert "<myself> my own line" in conversation(talk), talk.text()


# A talk.py told that every character is one column wide: curses knows better, so its rows are
# wider than talk.py thinks. The row must be cut, not carried to the start of the next row.
_WRONG_WIDTHS = """\
import sys
sys.path.insert(0, {repo!r})
import talk

talk.char_width = lambda ch: 1
sys.exit(talk.main(sys.argv[1:]))
"""


def test_a_row_curses_finds_too_wide_is_cut_not_carried_over(
    spawn_screen: Spawner, peer: Peers, sock_path: str, tmp_path: Path
) -> None:
    wrapper = tmp_path / "wrong_widths.py"
    wrapper.write_text(_WRONG_WIDTHS.format(repo=str(REPO_ROOT)))
    talk, other = start_with_peer(spawn_screen, peer, sock_path, program=wrapper)
    status = talk.row(0)
    # talk.py thinks this is 6 + 1 + 40 + 16 columns; curses draws 6 + 1 + 80 + 16.
    other.send_line("x" + "漢" * 40 + "<myself> forged")
    other.send_line("end")
    talk.wait_until(
        lambda t: any(row.startswith("<you> end") for row in conversation(t)) and drawn(t),
        DEADLINE,
        "the next message",
    )

    rows = [row for row in conversation(talk) if row]
    assert rows[0].startswith("<you> x漢漢"), talk.text()
    assert rows[1:] == ["<you> end"], f"the row spilled into the next:\n{talk.text()}"
    assert_layout(talk, status)


def test_window_of_0x0_is_too_small_then_talk_resumes(
    spawn_screen: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn_screen, peer, sock_path)
    talk.child.setwinsize(0, 0)  # what `stty rows 0 cols 0` does; the kernel sends SIGWINCH
    talk.wait_until(lambda t: "too small" in t.row(0), DEADLINE, "a 'too small' note")
    other.send_line("sent while 0x0")
    talk.type("typed while 0x0")
    # Ctrl-L repaints even now. It comes after those keys: once the repaint of a screen that
    # something else wiped is seen, talk.py has read them all while it was 0x0.
    talk.write_from_outside(b"\x1b[H\x1b[2J")
    talk.wait_until(lambda t: t.text().strip() == "", DEADLINE, "the screen wiped from outside")
    talk.press("ctrl_l")
    talk.wait_until(lambda t: "too small" in t.row(0), DEADLINE, "the note painted again")

    talk.resize(24, 80)
    talk.wait_until(
        lambda t: last_row(t) == "<you> sent while 0x0" and drawn(t),
        DEADLINE,
        "the conversation back after the resize",
    )
    assert input_row(talk) == "", "keys typed while the terminal said 0x0 were acted on blind"
    assert_layout(talk, talk.row(0))
    assert talk.row(0).startswith(talking_to(os.getpid())), talk.text()
    assert talk.child.isalive(), "talk.py ended"


# Sets the pseudo-terminal to 0x0, as some emulators create it, then becomes talk.py.
_START_AT_0X0 = (
    "import fcntl, os, struct, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('4H', 0, 0, 0, 0)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_terminal_created_0x0_is_too_small_then_talk_resumes(
    spawn_screen: Spawner, sock_path: str
) -> None:
    talk = spawn_screen(sock_path, args=["-c", _START_AT_0X0, str(TALK_PY), "--socket", sock_path])
    talk.wait_until(lambda t: "too small" in t.row(0), DEADLINE, "a 'too small' note")
    wait_until(lambda: os.path.exists(sock_path), DEADLINE, "the socket")
    talk.resize(24, 80)
    wait_for_status(talk, "Waiting for someone")
    assert_layout(talk, talk.row(0))


def _terminfo_without_cup(directory: str) -> str:
    """Compile a copy of xterm-256color that cannot address the cursor; return its name."""
    if not (shutil.which("infocmp") and shutil.which("tic")):
        pytest.skip("needs infocmp and tic (ncurses-bin)")
    source = subprocess.run(
        ["infocmp", "-x", "xterm-256color"], capture_output=True, text=True, check=True
    ).stdout
    kept = []
    for line in source.splitlines():
        if line.startswith("xterm-256color|"):
            line = "talk-test-nocup|xterm without cursor addressing,"
        caps = [cap for cap in line.split(",") if not cap.strip().startswith(("cup=", "use="))]
        kept.append(",".join(caps))
    path = os.path.join(directory, "nocup.src")
    with open(path, "w") as out:
        out.write("\n".join(kept) + "\n")
    subprocess.run(["tic", "-x", "-o", directory, path], capture_output=True, check=True)
    return "talk-test-nocup"


@pytest.mark.parametrize("kind", ["dumb", "no_cup"])
def test_terminal_that_cannot_move_the_cursor_is_refused_before_drawing(
    spawn_screen: Spawner, sock_path: str, tmp_path: Path, kind: str
) -> None:
    if kind == "dumb":
        env = child_env(TERM="dumb")
    else:
        env = child_env(TERM=_terminfo_without_cup(str(tmp_path)), TERMINFO=str(tmp_path))
    talk = spawn_screen(sock_path, env=env)
    status, printed = exit_of(talk)
    assert status == 1, f"exit status {status}; printed {printed!r}"
    assert printed.startswith("talk: ") and "\n" not in printed, printed
    assert "cursor" in printed and "TERM" in printed, printed
    assert ENTER_ALTERNATE_SCREEN not in talk.raw, "curses drew before the refusal"
    assert talk.raw.decode("utf-8", "replace").strip() == printed, "something drawn first"
    assert not os.path.exists(sock_path), "a socket was created for a terminal talk cannot use"


@pytest.mark.parametrize("name", ["C", "POSIX"])
def test_c_locale_loses_nothing_typed_or_received(
    spawn_screen: Spawner, peer: Peers, sock_path: str, name: str
) -> None:
    env = child_env(LC_ALL=name, LANG=name)
    talk, other = start_with_peer(spawn_screen, peer, sock_path, env=env)
    status = talk.row(0)
    other.send_line("café 日本語 end")
    wait_last_row(talk, "<you> café 日本語 end")

    talk.send_line("é and the rest of the line")
    assert other.read_line() == "é and the rest of the line\n".encode()
    wait_last_row(talk, "<myself> é and the rest of the line")
    assert_layout(talk, status)


def has_rules_for(rows: int, cols: int, talk: Talk) -> bool:
    """The two rules are where they go on a ``rows`` x ``cols`` screen."""
    return talk.row(rows - 2) == "=" * (cols - 1) and talk.row(1) == "-" * (cols - 1)


def has_input(typed: str, rows: int, talk: Talk) -> bool:
    """The input line of a screen ``rows`` high shows ``typed``, the cursor at its end."""
    return input_row(talk) == typed and talk.cursor == (len(typed), rows - 1)


@pytest.mark.parametrize("rows, cols", [(24, 80), (12, 40)])
def test_layout_status_separators_and_input_line(
    spawn: Spawner, peer: Peers, sock_path: str, rows: int, cols: int
) -> None:
    talk = start_server(spawn, sock_path, rows=rows, cols=cols)
    assert_layout(talk)
    assert talk.cursor[1] == rows - 1

    sock = peer(sock_path)
    talk.wait_for_row(0, "Talking to")
    sock.send_line("hi")
    talk.wait_until(lambda t: "<you> hi" in conversation(t), what="the message in row 2")
    assert talk.row(2) == "<you> hi"
    talk.type("typing")
    talk.wait_until(lambda t: input_row(t) == "typing", what="the input line")
    assert_layout(talk)
    assert talk.cursor == (len("typing"), rows - 1)


def shown_message(talk: Talk) -> str:
    """The one message on screen, its rows joined, without "<you>" and spaces."""
    return "".join("".join(message_rows(talk)).removeprefix("<you>").split())


def assert_wrapped(talk: Talk, text: str) -> None:
    """One message from the peer, ``text`` but for spaces, on 3+ rows; continuations indented."""
    # Wait for all of it: under load the rows of the message arrive in pieces.
    talk.wait_until(lambda t: shown_message(t) == text and drawn(t), what="the whole message")
    rows = message_rows(talk)
    # A message that is one long word may start on the row after "<you>" (talk.py does that).
    assert rows[0].startswith("<you>"), rows
    assert len(rows) >= 3, rows
    for row in rows[1:]:
        assert row.startswith(" "), f"continuation row not indented: {row!r}"
    assert_layout(talk)


@pytest.mark.parametrize(
    "words",
    [
        pytest.param([f"word{i:02d}" for i in range(30)], id="words"),
        pytest.param(["https://example.org/" + "x" * 180], id="one-long-word"),
    ],
)
def test_long_message_wraps_with_indented_continuation_rows(
    spawn: Spawner, peer: Peers, sock_path: str, words: list[str]
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    sock.send_line(" ".join(words))  # about 200 characters: 3 rows at 80 columns
    talk.wait_until(lambda t: words[-1][-6:] in t.text(), what="the end of the long message")
    assert_wrapped(talk, "".join(words))


def test_wide_characters_wrap_by_display_width(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    message = "漢字" * 40 + "😀" * 20  # 160 + 40 columns, 100 characters
    sock.send_line(message)
    talk.wait_until(lambda t: t.text().count("😀") == 20, what="all of the message")
    assert_wrapped(talk, message)


def test_resize_redraws_layout_and_keeps_history_and_input(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    talk.send_line("mine")
    assert sock.read_line() == b"mine\n"
    sock.send_line("theirs")
    talk.wait_until(lambda t: t.row(3) == "<you> theirs", what="both messages")
    status = talk.row(0)
    typed = "half typed"
    talk.type(typed)
    talk.wait_until(lambda t: input_row(t) == typed, what="the typed text")

    for rows, cols in [(30, 60), (15, 100)]:
        talk.resize(rows, cols)
        talk.wait_until(partial(has_rules_for, rows, cols), what=f"the layout at {rows}x{cols}")
        # After a shrink pyte still shows the old input row where the new one goes: wait for
        # the cursor too, which the redraw puts there last.
        talk.wait_until(
            partial(has_input, typed, rows),
            what="the input line kept, the cursor at its end",
        )
        assert_layout(talk)
        # The status line is fitted to the new width: who we talk to stays whole (the hint
        # after it is shortened or left out as the width allows).
        assert talk.row(0).startswith(talking_to(os.getpid())), talk.row(0)
        assert status.startswith(talking_to(os.getpid())), status
        assert message_rows(talk) == ["<myself> mine", "<you> theirs"]
        assert talk.cursor == (len(typed), rows - 1)

    talk.press("enter")
    assert sock.read_line() == typed.encode() + b"\n"


@pytest.mark.parametrize("call", [False, True], ids=["shared socket", "private call"])
def test_while_waiting_the_way_to_quit_is_shown_at_any_width_with_any_path(
    spawn: Spawner, sock_path: str, call: bool
) -> None:
    directory = os.path.join(os.path.dirname(sock_path), "a-longer-directory-for-talk")
    os.mkdir(directory)
    path = os.path.join(directory, "talk.sock")
    args = [LOGIN] if call else []  # a call to yourself: what a private call's status says
    for cols in (80, 40, 20):
        talk = spawn(path, *args, cols=cols, env=child_env(TALK_UTMP="/nonexistent"))
        talk.wait_until(
            lambda t: t.row(0).startswith("Waiting") and drawn(t), what="the waiting talk"
        )
        assert talk.row(0).endswith(tuple(f" - {hint}" for hint in QUIT_HINTS)), talk.row(0)
        talk.send_line(".")
        assert talk.wait_exit(EXIT_WITHIN) == 0, talk.output


QUIT_ENDINGS = tuple(f" - {hint}" for hint in QUIT_HINTS)


@pytest.mark.parametrize("cols", [80, 40])
def test_while_waiting_the_way_out_stays_and_the_whole_news_is_below(
    spawn: Spawner, sock_path: str, cols: int
) -> None:
    """What is at the path is a note beside where talk waits: at any width the status line
    says that it waits and how to quit, and the whole of the news is in the conversation
    area, where nothing is yet."""
    with open(sock_path, "w"):
        pass  # talk.sock is a file: talk waits at talk.sock.1
    talk = spawn(sock_path, cols=cols)
    whole = (
        f"Waiting for someone to connect to {sock_path}.1 "
        f"(talk.sock is a file of {LOGIN}'s, not a socket)"
    )
    talk.wait_until(
        lambda t: squeezed(whole) in news_below(t) and drawn(t),
        DEADLINE,
        "the whole news in the conversation area",
    )
    status = talk.row(0)
    assert status.startswith("Waiting for someone") and status.endswith(QUIT_ENDINGS), status
    assert "(talk.sock is" not in status, "the note should go before the way out"


@pytest.mark.parametrize(("rows", "cols"), [(3, 10), (3, 12), (2, 10), (5, 19)])
def test_a_terminal_too_small_says_the_size_it_needs(
    spawn: Spawner, sock_path: str, rows: int, cols: int
) -> None:
    talk = spawn(sock_path, rows=rows, cols=cols)
    need = f"{MIN_COLS}x{MIN_ROWS}"
    talk.wait_until(lambda t: need in flowing(t.display), DEADLINE, f"{need} on the screen")
    assert all(len(row) < cols for row in talk.display), talk.display
