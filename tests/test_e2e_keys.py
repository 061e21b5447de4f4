"""End-to-end tests of keys and editing in the real talk.py: typing, erasing, moving, Alt
keys, tabs, pasting, and that the help and the README list the keys talk acts on.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import partial

import pytest
from terminal import (
    DEADLINE,
    PASTE_END,
    PASTE_START,
    PROMPTLY,
    TALK_PY,
    Peers,
    Spawner,
    Talk,
    assert_closed_cleanly,
    assert_layout,
    child_env,
    conversation,
    input_row,
    start_with_peer,
    wait_last_row,
)

import talk
from talk import BRACKETED_PASTE_ON


def test_accents_and_cjk_typed_are_shown_and_sent_intact(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    text = "ça va? ñandú 漢字 日本語 ok"
    talk.type(text)
    talk.wait_until(lambda t: input_row(t) == text, what="the typed text in the input line")
    talk.press("enter")
    assert sock.read_line() == text.encode("utf-8") + b"\n"
    talk.wait_until(lambda t: t.row(2) == "<myself> " + text, what="own line")


@pytest.mark.parametrize(
    "term, key",
    [
        pytest.param("xterm-256color", b"\x7f", id="DEL-is-KEY_BACKSPACE-on-xterm"),
        pytest.param("xterm-256color", b"\x08", id="ctrl-H-on-xterm"),
        pytest.param("vt100", b"\x7f", id="DEL-on-vt100"),
        pytest.param("vt100", b"\x08", id="ctrl-H-is-KEY_BACKSPACE-on-vt100"),
    ],
)
def test_backspace_deletes_one_character(
    spawn: Spawner, peer: Peers, sock_path: str, term: str, key: bytes
) -> None:
    # For xterm-256color the terminfo backspace key (kbs) is DEL, for vt100 it is ^H: between
    # them, DEL and ^H each arrive once as a plain character and once as KEY_BACKSPACE.
    talk, sock = start_with_peer(spawn, peer, sock_path, env=child_env(TERM=term))
    talk.type("abc")
    talk.wait_until(lambda t: input_row(t) == "abc", what="abc typed")
    talk.type(key)
    # ncurses rubs out with "\b \b": the c is gone while the cursor is still after the blank.
    talk.wait_until(
        lambda t: input_row(t) == "ab" and t.cursor == (2, t.rows - 1),
        what="the c rubbed out and the cursor after the b",
    )
    assert talk.cursor == (2, talk.rows - 1)
    talk.press("enter")
    assert sock.read_line() == b"ab\n"


def test_ctrl_u_clears_the_line(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    talk.type("throw this away")
    talk.wait_until(lambda t: input_row(t) == "throw this away", what="typed text")
    talk.press("ctrl_u")
    talk.wait_until(lambda t: input_row(t) == "", what="an empty input line")
    talk.send_line("kept")
    assert sock.read_line() == b"kept\n"


def test_ctrl_w_deletes_the_last_word(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    talk.type("hello big world")
    talk.wait_until(lambda t: input_row(t) == "hello big world", what="typed text")
    talk.press("ctrl_w")
    talk.wait_until(lambda t: input_row(t) == "hello big", what="the last word gone")
    talk.press("enter")
    assert sock.read_line().rstrip(b" \n") == b"hello big"


def test_long_input_scrolls_sideways_and_is_sent_whole(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    text = "".join(f"{i:03d}," for i in range(50))  # 200 characters, every part distinct
    talk.type(text)
    talk.wait_until(lambda t: input_row(t).endswith("049,"), what="the end of the typed text")
    shown = input_row(talk)
    assert len(shown) <= talk.cols - 1
    assert len(shown) >= (talk.cols - 1) // 2, "most of the input row should be in use"
    assert text.endswith(shown), shown
    assert talk.cursor[1] == talk.rows - 1
    assert_layout(talk)
    talk.press("enter")
    assert sock.read_line() == text.encode() + b"\n"


def test_nothing_typed_is_lost(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    talk, sock = start_with_peer(spawn, peer, sock_path)
    text = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(300))
    talk.type(text + "\r")
    assert sock.read_line() == text.encode() + b"\n"


def test_a_lone_escape_does_not_stall_the_program(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    # curses waits ESCDELAY after an Esc for the rest of a key sequence (1 s unless told
    # otherwise), and meanwhile nothing else happens. Leave ESCDELAY to talk.py.
    env = child_env()
    env.pop("ESCDELAY", None)
    talk, sock = start_with_peer(spawn, peer, sock_path, env=env)
    delays = []
    for attempt in range(3):
        talk.press("escape")
        # A person who pressed Esc and nothing after it; not a wait for talk.py to do anything.
        time.sleep(0.1)
        sent = time.monotonic()
        sock.send_line(f"after escape {attempt}")
        talk.wait_until(partial(shows_row, f"<you> after escape {attempt}"), what="the message")
        delays.append(time.monotonic() - sent)
    # The best of three, as the machine may be busy: a stalled keyboard costs most of a second
    # every time.
    assert min(delays) < 0.5, f"messages took {delays} s to show after a lone Esc"


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


@pytest.mark.parametrize(
    ("typed", "sent"),
    [("héllo", b"h\xc3\xa9llo\n"), ("a\tb", b"a       b\n")],
    ids=["as one UTF-8 line", "a tab as spaces"],
)
def test_typed_text_goes_out_as_one_line(
    spawn: Spawner, peer: Peers, sock_path: str, typed: str, sent: bytes
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    talk.send_line(typed)
    assert other.read_line() == sent


def test_pasted_text_is_sent_literally_line_by_line(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, other = start_with_peer(spawn, peer, sock_path)
    assert BRACKETED_PASTE_ON in talk.raw, "bracketed paste was not turned on"
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


def shows_row(text: str, talk: Talk) -> bool:
    """One of the rows on the screen is ``text``."""
    return text in talk.display


def test_help_and_readme_name_the_new_keys(spawn: Spawner, sock_path: str) -> None:
    helped = spawn(sock_path, args=[str(TALK_PY), "--help"])
    assert helped.wait_exit(PROMPTLY) == 0
    readme = (TALK_PY.parent / "README.md").read_text()
    help_text = " ".join(helped.output.split())
    for key in ("Ctrl-End", "Alt-b", "Alt-f", "Alt-Backspace", "Esc"):
        assert key in help_text, key
        assert key in readme, key
    assert "bell" in readme
    # Both are made from (or checked against) the one key table that the Display acts on.
    for row in talk.KEYS:
        assert f"{row.keys}: {row.does}" in help_text, row
    assert readme_keys(readme) == [(row.keys, row.does) for row in talk.KEYS]


def readme_keys(readme: str) -> list[tuple[str, str]]:
    """The rows of the README's table of keys (under "### Keys"), without Markdown quotes."""
    section = readme.split("### Keys", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return [(key.strip().replace("`", ""), does.strip().replace("`", "")) for key, does in rows]
