"""Unit tests of what the screen shows: text made safe to draw, widths as curses measures them
(over the whole of Unicode), wrapping into rows, and choosing what fits.

curses draws with the C library's ``wcwidth()``; talk.py must measure with the same function,
or a peer's row comes out wider than the screen and curses carries the rest (``<myself> ...``
included) to the start of the next row. The sweeps here run every code point, U+0000 to
U+10FFFF, through ``char_width``, ``printable``, ``wrap`` (through ``Message``, as the
conversation uses it) and ``InputLine.view``, at 80 and at 23 columns. The oracle is the C
library itself, asked through ctypes independently of talk.py's own cache; and, once, curses
itself, run in a pseudo-terminal to report how far it moves the cursor for each character.
"""

from __future__ import annotations

import json
import locale
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from terminal import REPO_ROOT, Talk, libc_wcwidth

import talk
from talk import (
    MYSELF,
    YOU,
    InputLine,
    Message,
    char_width,
    clip,
    first_that_fits,
    printable,
    text_width,
    wrap,
)


def test_the_first_text_that_fits_is_chosen_else_the_last_is_cut() -> None:
    assert first_that_fits(["long one", "short", "s"], 6) == "short"
    assert first_that_fits(["long one", "short"], 3) == "sho"
    assert first_that_fits(["漢字漢字"], 5) == "漢字"


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


ALL = range(sys.maxunicode + 1)


CHUNK = 40  # code points per line: "lines of a few dozen characters"


WIDTHS = (80, 23)


#: General categories that must never reach the terminal as themselves: controls, format
#: characters (bidi overrides...), surrogates, private use, unassigned, line/para separators.
INERT_ONLY = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@pytest.fixture(scope="module")
def utf8() -> Iterator[None]:
    """The C library in a UTF-8 locale, as talk.py runs in a UTF-8 terminal."""
    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        pytest.skip("no C.UTF-8 locale on this system")
    talk.forget_widths()
    yield
    locale.setlocale(locale.LC_CTYPE, saved)
    talk.forget_widths()


@pytest.fixture(scope="module")
def oracle(utf8: None) -> list[int]:
    """The C library's wcwidth() of every code point, asked directly."""
    wcwidth = libc_wcwidth()
    return [wcwidth(code) for code in ALL]


def width(text: str, oracle: list[int]) -> int:
    """Columns ``text`` takes for curses; AssertionError if curses cannot draw some of it."""
    widths = list(map(oracle.__getitem__, map(ord, text)))
    assert min(widths, default=0) >= 0, f"undrawable character in {text!r}"
    return sum(widths)


def lines_of_every_code_point() -> Iterator[str]:
    """U+0000 .. U+10FFFF in order, CHUNK at a time (surrogates included: a str holds them)."""
    for start in range(0, len(ALL), CHUNK):
        yield "".join(map(chr, range(start, min(start + CHUNK, len(ALL)))))


def test_char_width_is_the_c_library_wcwidth_for_every_code_point(oracle: list[int]) -> None:
    wrong = [hex(code) for code in ALL if talk.char_width(chr(code)) != max(-1, oracle[code])]
    assert not wrong, f"{len(wrong)} code points measured unlike wcwidth(), e.g. {wrong[:10]}"


# Run in a pty by the next test: curses, in the locale talk.py picks, reports how far it moves
# the cursor for every character that talk.py says it can draw.
_CURSES_SWEEP = """\
import curses, json, sys
sys.path.insert(0, {repo!r})
import locale
import talk
locale.setlocale(locale.LC_ALL, "")  # the child's environment says C.UTF-8
wrong = []
def sweep(screen):
    pad = curses.newpad(1, 8)
    for code in range(1, sys.maxunicode + 1):
        expected = talk.char_width(chr(code))
        if expected < 0:
            continue
        pad.erase()
        pad.addstr(0, 0, "a" + chr(code))  # after a base: a combining mark has one
        if pad.getyx()[1] - 1 != expected:
            wrong.append([code, expected, pad.getyx()[1] - 1])
curses.wrapper(sweep)
with open({out!r}, "w") as out:
    json.dump(wrong, out)
"""


def test_char_width_is_how_far_curses_moves_the_cursor_for_every_code_point(tmp_path: Path) -> None:
    out = tmp_path / "wrong.json"
    script = tmp_path / "sweep.py"
    script.write_text(_CURSES_SWEEP.format(repo=str(REPO_ROOT), out=str(out)))
    sweep = Talk("", args=[str(script)])  # a curses program in a pty, like talk.py
    try:
        status = sweep.wait_exit(timeout=120)
    finally:
        sweep.close()
    assert status == 0, sweep.after_exit[-2000:]
    wrong = json.loads(out.read_text())
    shown = [f"U+{code:04X}: talk {mine}, curses {theirs}" for code, mine, theirs in wrong[:10]]
    assert not wrong, f"{len(wrong)} code points curses draws at another width: {shown}"


def test_every_code_point_is_drawn_as_itself_only_if_it_is_inert_and_drawable(
    oracle: list[int],
) -> None:
    wrong = []
    for code in ALL:
        ch = chr(code)
        shown = printable(ch)
        if shown == ch:
            ok = oracle[code] >= 0 and unicodedata.category(ch) not in INERT_ONLY
        elif code < 0x20 or code == 0x7F:
            ok = shown == "^" + chr(code ^ 0x40)
        else:
            ok = shown == f"<U+{code:04X}>"
        if not ok:
            wrong.append(f"U+{code:04X} -> {shown!r}")
    assert not wrong, f"{len(wrong)} code points drawn wrongly, e.g. {wrong[:10]}"


def test_a_locale_that_cannot_draw_a_character_gets_it_spelled_out(utf8: None) -> None:
    """In the C locale wcwidth() is -1 for all but ASCII: such text is spelled, not lost."""
    locale.setlocale(locale.LC_CTYPE, "C")
    talk.forget_widths()
    try:
        assert printable("café 日本語") == "caf<U+00E9> <U+65E5><U+672C><U+8A9E>"
        assert talk.char_width("é") == -1
    finally:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        talk.forget_widths()


@pytest.mark.parametrize("columns", WIDTHS)
def test_every_code_point_wraps_into_rows_that_fit(oracle: list[int], columns: int) -> None:
    indent = len(YOU) + 1
    problems = []
    for line in lines_of_every_code_point():
        rows = Message(YOU, line).rows(columns)
        start = f"U+{ord(line[0]):04X}"
        if not rows[0].startswith(f"{YOU} "):
            problems.append(f"{start}: first row {rows[0]!r}")
        for row in rows:
            if (columns_taken := width(row, oracle)) > columns:
                problems.append(f"{start}: row {row!r} is {columns_taken} columns")
        for row in rows[1:]:
            if not row.startswith(" " * indent):
                problems.append(f"{start}: continuation row {row!r} not indented")
        # Nothing lost: only the indentation and spaces at a break may have been added or
        # dropped.
        text = rows[0] + "".join(row[indent:] for row in rows[1:])
        if text.replace(" ", "") != f"{YOU} {printable(line)}".replace(" ", ""):
            problems.append(f"{start}: rows {rows!r} lost text")
        if len(problems) >= 10:
            break
    assert not problems, "\n".join(problems)


def _cursor_is_right(line: InputLine, text: str, x: int, oracle: list[int]) -> bool:
    """Column ``x`` of ``text`` (the view) is between what is before and after the cursor."""
    before = printable("".join(line.chars[: line.cursor]))
    after = printable("".join(line.chars[line.cursor :]))
    column = 0
    for k in range(len(text) + 1):
        if k:
            column += oracle[ord(text[k - 1])]
        if column < x:
            continue
        if column > x:
            return False
        left, right = text[:k], text[k:]
        # A combining character at the start of the view is drawn on a blank of its own.
        left_ok = before.endswith(left) or (left[:1] == " " and before.endswith(left[1:]))
        if left_ok and after.startswith(right):
            return True
    return False


@pytest.mark.parametrize("columns", WIDTHS)
def test_input_line_view_fits_and_keeps_the_cursor_on_its_character(
    oracle: list[int], columns: int
) -> None:
    view_width = columns - 1  # as the Display asks: the last cell of the screen stays empty
    problems = []
    for chunk in lines_of_every_code_point():
        line = InputLine()
        for ch in chunk:
            line.insert(ch)
        for where in ("end", "middle"):
            if where == "middle":  # from the start of the line, half-way through it
                line.home()
                for _ in range(CHUNK // 2):
                    line.right()
            text, x = line.view(view_width)
            start = f"U+{ord(chunk[0]):04X} ({where})"
            if width(text, oracle) > view_width or not 0 <= x <= view_width:
                problems.append(f"{start}: view {text!r} with the cursor at {x}")
            elif not _cursor_is_right(line, text, x, oracle):
                problems.append(f"{start}: cursor at {x} in {text!r}, index {line.cursor}")
        if len(problems) >= 10:
            break
    assert not problems, "\n".join(problems)


def test_typed_characters_stay_in_the_line_however_they_are_shown(utf8: None) -> None:
    line = InputLine()
    typed = "a\u200d\ue000\U0001fae8\u0301"  # ZWJ, private use, (newer) emoji, lone accent
    for ch in typed:
        line.insert(ch)
    text, _x = line.view(40)
    assert line.text == typed
    assert "<U+200D>" in text and "<U+E000>" in text
