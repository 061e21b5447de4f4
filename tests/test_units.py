"""Fast tests of talk.py's pure parts: framing, safe text, wrapping, editing, history."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import talk
from pubmarine import PubPen
from talk import (
    CUT_MARK,
    MYSELF,
    YOU,
    History,
    InputLine,
    LineDecoder,
    Message,
    char_width,
    clip,
    printable,
    text_width,
    wrap,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- LineDecoder: a byte stream in, whole lines out -------------------------------------------


def test_two_messages_in_one_read_are_two_lines() -> None:
    assert LineDecoder().feed(b"one\ntwo\n") == ["one", "two"]


def test_a_message_split_across_reads_is_one_line() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"ab") == []
    assert decoder.feed(b"cd\nef") == ["abcd"]
    assert decoder.feed(b"\n") == ["ef"]


def test_a_multibyte_character_split_across_reads_decodes_whole() -> None:
    decoder = LineDecoder()
    data = "é漢😀\n".encode()
    lines = [line for byte in data for line in decoder.feed(bytes([byte]))]
    assert lines == ["é漢😀"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert LineDecoder().feed(b"a\xffb\xc3\n") == ["a\ufffdb\ufffd"]


def test_crlf_line_endings_are_accepted() -> None:
    assert LineDecoder().feed(b"hi\r\n") == ["hi"]


def test_a_last_line_without_newline_is_kept_at_end_of_stream() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"bye") == []
    assert decoder.finish() == ["bye"]
    assert decoder.finish() == []


def test_an_overlong_line_is_cut_and_marked_and_the_next_line_survives() -> None:
    decoder = LineDecoder(max_bytes=10)
    assert decoder.feed(b"x" * 7) == []
    assert decoder.feed(b"y" * 1000) == []
    assert decoder.feed(b"zzz\nnext\n") == ["xxxxxxxyyy" + CUT_MARK, "next"]


def test_a_line_without_end_keeps_memory_bounded() -> None:
    decoder = LineDecoder(max_bytes=1024)
    for _ in range(1000):
        decoder.feed(b"a" * 4096)
    assert len(decoder._pending) == 1024
    assert decoder.feed(b"\n") == ["a" * 1024 + CUT_MARK]


def test_a_cut_inside_a_multibyte_character_does_not_show_garbage() -> None:
    decoder = LineDecoder(max_bytes=4)
    assert decoder.feed("ab漢\n".encode()) == ["ab" + CUT_MARK]


# -- printable: peer text made inert ---------------------------------------------------------


def test_ordinary_text_is_unchanged() -> None:
    text = "héllo wörld 漢字 😀 e\u0301 no\u00a0break"
    assert printable(text) == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\rb", "a^Mb"),
        ("\x1b[2J", "^[[2J"),
        ("\x08\x08", "^H^H"),
        ("tab\there", "tab^Ihere"),
        ("del\x7f", "del^?"),
        ("\x00", "^@"),
        ("\u009b2J", "<U+009B>2J"),
        ("\u0085", "<U+0085>"),
        ("\u202eevil", "<U+202E>evil"),
        ("a\u2028b", "a<U+2028>b"),
    ],
)
def test_control_characters_are_shown_as_visible_text(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_nothing_printable_returns_contains_a_control_character() -> None:
    everything = "".join(chr(c) for c in range(0x250)) + "\u200b\u2066\ue000\U000e0001"
    shown = printable(everything)
    assert all(ch.isprintable() or ch == "\u00a0" for ch in shown)


# -- widths and wrapping ----------------------------------------------------------------------


def test_character_widths() -> None:
    assert char_width("a") == 1
    assert char_width("漢") == 2
    assert char_width("😀") == 2
    assert char_width("\u0301") == 0
    assert text_width("漢字ab") == 6


def test_clip_never_splits_a_wide_character() -> None:
    assert clip("ab漢字", 3) == "ab"
    assert clip("ab漢字", 4) == "ab漢"
    assert clip("abc", 10) == "abc"


def test_wrap_fits_every_row_in_the_width() -> None:
    text = "the quick brown fox jumps over the lazy dog " * 5 + "x" * 40 + " 漢字 end"
    rows = wrap(text, 17, indent=4)
    assert all(text_width(row) <= 17 for row in rows)
    assert "".join("".join(rows).split()) == "".join(text.split())  # nothing lost


def test_wrap_breaks_between_words() -> None:
    assert wrap("aaa bbb ccc", 8) == ["aaa bbb ", "ccc"]


def test_wrap_breaks_inside_a_word_longer_than_the_row() -> None:
    assert wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_wrap_breaks_a_word_wider_than_a_row_where_the_row_ends() -> None:
    rows = wrap("<you> " + "x" * 30, 12, indent=6)
    assert rows == ["<you> xxxxxx", "      xxxxxx", "      xxxxxx", "      xxxxxx", "      xxxxxx"]
    assert all(text_width(row) <= 12 for row in rows)


def test_wrap_breaks_cjk_text_without_spaces_anywhere_between_characters() -> None:
    assert wrap("<you> " + "漢" * 6, 10, indent=6) == ["<you> 漢漢", "      漢漢", "      漢漢"]


def test_wrap_does_not_split_wide_characters() -> None:
    rows = wrap("漢" * 7, 5)
    assert rows == ["漢漢", "漢漢", "漢漢", "漢"]


def test_wrapped_rows_after_the_first_are_indented() -> None:
    rows = wrap("x" * 30, 10, indent=3)
    assert rows[0] == "x" * 10
    assert all(row.startswith("   ") and len(row) <= 10 for row in rows[1:])


def test_a_message_cannot_start_a_row_with_a_forged_prefix() -> None:
    for width in range(20, 90):
        for pad in range(0, 2 * width):
            text = " " * pad + f"{MYSELF} forged"
            rows = Message(YOU, text).rows(width)
            assert not any(row.startswith(MYSELF) for row in rows), (width, pad)
            assert all(row.startswith(" ") for row in rows[1:])


# -- InputLine: the line being typed ---------------------------------------------------------


def typed(text: str) -> InputLine:
    line = InputLine()
    for ch in text:
        line.insert(ch)
    return line


def test_backspace_deletes_the_character_before_the_cursor() -> None:
    line = typed("abc")
    line.backspace()
    assert line.text == "ab"
    line.left()
    line.backspace()
    assert line.text == "b"
    line.backspace()
    assert line.text == "b"


def test_typing_goes_in_at_the_cursor() -> None:
    line = typed("ac")
    line.left()
    line.insert("b")
    line.home()
    line.insert(">")
    line.end()
    line.insert("<")
    assert line.text == ">abc<"


def test_delete_removes_the_character_under_the_cursor() -> None:
    line = typed("abc")
    line.home()
    line.delete()
    assert line.text == "bc"
    line.end()
    line.delete()
    assert line.text == "bc"


def test_ctrl_w_deletes_the_word_before_the_cursor() -> None:
    line = typed("hello big  world  ")
    line.delete_word()
    assert line.text == "hello big  "
    line.delete_word()
    assert line.text == "hello "


def test_take_returns_the_line_and_empties_it() -> None:
    line = typed("héllo")
    assert line.take() == "héllo"
    assert line.text == ""
    assert line.cursor == 0


def test_a_long_line_scrolls_sideways_to_keep_the_cursor_in_view() -> None:
    line = typed("".join(str(i % 10) for i in range(100)))
    shown, x = line.view(20)
    assert shown.endswith("789") and x < 20
    assert text_width(shown) <= 20
    assert shown[:x] == line.text[100 - x :]
    line.home()
    shown, x = line.view(20)
    assert x == 0 and shown == line.text[:20]


def test_sideways_scroll_counts_wide_characters_as_two_columns() -> None:
    line = typed("漢" * 30)
    shown, x = line.view(21)
    assert x <= 20 and text_width(shown) <= 21
    assert x == text_width(shown)


def test_deleting_at_the_end_of_a_scrolled_line_brings_earlier_text_back() -> None:
    line = typed("a" * 50)
    line.view(20)
    for _ in range(45):
        line.backspace()
    shown, x = line.view(20)
    assert shown == "aaaaa" and x == 5


# -- History: bounded, wrapped, scrollable ---------------------------------------------------


def test_history_shows_the_newest_rows_at_the_bottom() -> None:
    history = History()
    for i in range(30):
        history.add(YOU, f"line {i}")
    history.resize(40, 10)
    rows = history.window()
    assert rows == [f"{YOU} line {i}" for i in range(20, 30)]


def test_history_is_bounded() -> None:
    history = History(limit=100)
    for i in range(1000):
        history.add(YOU, str(i))
    assert len(history.messages) == 100
    assert history.messages[0].text == "900"


def test_history_is_bounded_in_characters_too() -> None:
    history = History(limit=100, max_chars=10_000)
    for i in range(50):
        history.add(YOU, f"{i:04d}" + "x" * 996)
    assert history.chars <= 10_000
    assert len(history.messages) == 10
    assert history.messages[0].text.startswith("0040")
    history.resize(40, 3)
    assert history.window()[-1].endswith("x")


def test_page_up_and_down_move_through_history_and_stop_at_the_ends() -> None:
    history = History()
    for i in range(30):
        history.add(YOU, f"{i}")
    history.resize(40, 10)
    history.page_up()
    assert history.window()[-1] == f"{YOU} 20"
    for _ in range(10):
        history.page_up()
    assert history.window()[0] == f"{YOU} 0"
    assert history.scroll == 20, "PageUp went further back than the oldest row"
    for _ in range(10):
        history.page_down()
    assert history.window()[-1] == f"{YOU} 29"
    assert history.scroll == 0


def test_reading_back_is_not_disturbed_by_new_messages() -> None:
    history = History()
    for i in range(30):
        history.add(YOU, f"{i}")
    history.resize(40, 10)
    history.page_up()
    before = history.window()
    history.add(MYSELF, "new")
    assert history.window() == before


# -- TalkProtocol over a real socket pair ----------------------------------------------------


async def _connected_pair(pubpen: PubPen, **kwargs: str) -> tuple[talk.TalkProtocol, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    _transport, protocol = await pubpen.loop.create_connection(
        lambda: talk.TalkProtocol(pubpen, **kwargs), sock=ours
    )
    assert isinstance(protocol, talk.TalkProtocol)
    return protocol, theirs


async def _recv_until(sock: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while data.count(b"\n") < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.asyncio
async def test_incoming_lines_are_published_whole_and_in_order() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    seen: list[tuple[str, str]] = []
    pubpen.subscribe("incoming", lambda text, who: seen.append((text, who)))
    protocol, theirs = await _connected_pair(pubpen)
    theirs.sendall(b"one\ntw")
    theirs.sendall(b"o\n\xc3")
    theirs.sendall(b"\xa9\n")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert seen == [("one", YOU), ("two", YOU), ("é", YOU)]


@pytest.mark.asyncio
async def test_outgoing_lines_go_on_the_wire_one_per_line() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    _protocol, theirs = await _connected_pair(pubpen)
    pubpen.publish("outgoing", "héllo")
    pubpen.publish("outgoing", "second")
    assert await _recv_until(theirs, 2) == "héllo\nsecond\n".encode()
    theirs.close()


@pytest.mark.asyncio
async def test_lines_typed_before_anyone_connects_are_sent_on_connection() -> None:
    loop = asyncio.get_running_loop()
    pubpen = PubPen(loop)
    protocol = talk.TalkProtocol(pubpen)
    pubpen.publish("outgoing", "early")
    await pubpen.drain()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    await loop.create_connection(lambda: protocol, sock=ours)
    assert await _recv_until(theirs, 1) == b"early\n"
    theirs.close()


@pytest.mark.asyncio
async def test_connecting_publishes_who_is_at_the_other_end() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    infos: list[str] = []
    pubpen.subscribe("info", infos.append)
    _protocol, theirs = await _connected_pair(pubpen)
    await pubpen.drain()
    # What the keys do is the Display's to say, after this.
    assert infos == [f"Talking to {pwd.getpwuid(os.getuid()).pw_name} (pid {os.getpid()})"]
    theirs.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("caller", [True, False])
async def test_a_busy_notice_ends_the_call_only_for_the_caller(caller: bool) -> None:
    dialled = "/some/path" if caller else ""
    pubpen = PubPen(asyncio.get_running_loop())
    quits: list[tuple[str, int]] = []
    shown: list[str] = []
    pubpen.subscribe("quit", lambda reason, status: quits.append((reason, status)))
    pubpen.subscribe("incoming", lambda text, who: shown.append(text))
    protocol, theirs = await _connected_pair(pubpen, dialled=dialled)
    theirs.sendall(talk.BUSY_LINE.encode() + b"\n")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    if caller:
        assert len(quits) == 1 and shown == []
        assert quits[0][0].startswith("/some/path is busy") and quits[0][1] == 1
    else:
        assert quits == [] and shown == [talk.BUSY_LINE]


@pytest.mark.asyncio
async def test_a_busy_notice_after_the_first_line_is_only_a_line() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    quits: list[tuple[str, int]] = []
    shown: list[str] = []
    pubpen.subscribe("quit", lambda reason, status: quits.append((reason, status)))
    pubpen.subscribe("incoming", lambda text, who: shown.append(text))
    protocol, theirs = await _connected_pair(pubpen, dialled="/some/path")
    theirs.sendall(b"hello\n" + talk.BUSY_LINE.encode() + b"\n")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert quits == [] and shown == ["hello", talk.BUSY_LINE]


def _record_endings(pubpen: PubPen) -> tuple[list[str], list[tuple[str, int]]]:
    """Lists that fill with the ``error`` messages and the ``conn_lost`` (reason, status)."""
    errors: list[str] = []
    lost: list[tuple[str, int]] = []
    pubpen.subscribe("error", errors.append)
    pubpen.subscribe("conn_lost", lambda reason, status: lost.append((reason, status)))
    return errors, lost


@pytest.mark.asyncio
async def test_a_failed_write_is_an_error_and_ends_the_conversation_with_status_1() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    errors, lost = _record_endings(pubpen)
    protocol, theirs = await _connected_pair(pubpen)
    theirs.shutdown(socket.SHUT_RD)  # writing to it now fails with EPIPE
    pubpen.publish("outgoing", "into the void")
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert len(errors) == 1 and "Broken pipe" in errors[0], errors
    assert len(lost) == 1 and lost[0][1] == 1, lost
    theirs.close()


@pytest.mark.asyncio
async def test_a_peer_that_hangs_up_ends_the_conversation_with_status_0() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    errors, lost = _record_endings(pubpen)
    protocol, theirs = await _connected_pair(pubpen)
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert errors == [] and lost == [("the other side closed the connection", 0)]


# -- talk.py uses its own bus ----------------------------------------------------------------


def test_talk_uses_the_pubmarine_beside_it_even_where_pubmarine_0_4_3_is_installed(
    tmp_path: Path,
) -> None:
    # The layout of a site-packages with both installed: pubmarine 0.4.3 is a package, and a
    # package wins over a module of the same name in the same directory.
    for name in ("talk.py", "pubmarine.py"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "pubmarine").mkdir()
    (tmp_path / "pubmarine" / "__init__.py").write_text("class PubPen:\n    pass\n")
    script = "import talk, pubmarine; print(pubmarine.__file__, hasattr(talk.PubPen, 'drain'))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [str(tmp_path / "pubmarine.py"), "True"], result
