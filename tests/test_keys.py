"""Unit tests of keys and editing: the line being typed (InputLine), and the KeyDecoder that
names Alt keys, takes bracketed pastes literally and swallows unknown escape sequences.
"""

from __future__ import annotations

import curses

import pytest

import talk
from talk import (
    ESC,
    InputLine,
    KeyDecoder,
    Pasted,
    text_width,
)


def decode(*keys: talk.Key, pause: bool = False) -> list[talk.Key]:
    decoder = KeyDecoder()
    out = [decoded for key in keys for decoded in decoder.feed(key)]
    return out + decoder.pause() if pause else out


def chars(text: str) -> list[talk.Key]:
    return list(text)


def test_plain_keys_pass_through_unchanged() -> None:
    assert decode("a", "é", "\n", curses.KEY_LEFT, "\x17") == [
        "a",
        "é",
        "\n",
        curses.KEY_LEFT,
        "\x17",
    ]


@pytest.mark.parametrize(
    "second, name",
    [
        ("b", "Alt-b"),
        ("f", "Alt-f"),
        ("\x7f", "Alt-Backspace"),
        (curses.KEY_BACKSPACE, "Alt-Backspace"),
    ],
)
def test_alt_keys_come_out_by_name(second: talk.Key, name: str) -> None:
    assert decode(ESC, second, "x") == [name, "x"]


def test_an_alt_letter_talk_has_no_use_for_types_nothing() -> None:
    assert decode(ESC, "z", ESC, "B", "x") == ["x"]


@pytest.mark.parametrize(
    "sequence",
    ["[57;5u", "[?99x", "OZ", "[1;2P", "[" + "9" * 40 + "~"],
    ids=["csi-u", "private", "ss3", "modified-f1", "overlong"],
)
def test_unknown_escape_sequences_are_swallowed_whole(sequence: str) -> None:
    assert decode(ESC, *chars(sequence), "x") == ["x"]


def test_a_sequence_cut_short_by_a_control_character_keeps_that_character() -> None:
    assert decode(ESC, "[", "1", "\r") == ["\r"]


def test_ctrl_end_spelled_out_is_named_like_the_curses_key() -> None:
    assert decode(ESC, *chars("[1;5F")) == ["kEND5"]


def test_a_lone_esc_is_the_esc_key_once_the_keyboard_pauses() -> None:
    assert decode(ESC, pause=True) == [ESC]
    assert decode(ESC, "[", pause=True) == []  # half a sequence is no key


def test_pasted_text_comes_out_literally_and_the_paste_ends() -> None:
    keys = [ESC, *chars("[200~"), *chars(".\r\tx"), ESC, *chars("[201~"), "y"]
    assert "".join(map(str, decode(*keys)[:-1])) == ".\r\tx"
    assert all(isinstance(k, Pasted) for k in decode(*keys)[:-1])
    assert decode(*keys)[-1] == "y" and not isinstance(decode(*keys)[-1], Pasted)


def test_escape_characters_inside_a_paste_do_not_end_it() -> None:
    keys = [ESC, *chars("[200~a"), ESC, *chars("[20x"), ESC, ESC, *chars("[201~"), "z"]
    out = decode(*keys)
    assert "".join(map(str, out[:-1])) == "a[20x" and out[-1] == "z"


def test_a_paste_is_one_paste_across_pauses() -> None:
    decoder = KeyDecoder()
    out: list[talk.Key] = []
    for piece in ([ESC, *chars("[200~")], ["."], [ESC], [*chars("[201~")], ["."]):
        for key in piece:
            out += decoder.feed(key)
        out += decoder.pause()
    assert out == [".", "."] and isinstance(out[0], Pasted) and not isinstance(out[1], Pasted)


def typed(text: str, cursor: int | None = None) -> InputLine:
    line = InputLine()
    for ch in text:
        line.insert(ch)
    if cursor is not None:
        line.cursor = cursor
    return line


def test_word_left_and_right_stop_at_word_starts_and_ends() -> None:
    line = typed("one  two three")
    stops = []
    for _ in range(4):
        line.word_left()
        stops.append(line.cursor)
    assert stops == [9, 5, 0, 0]
    stops = []
    for _ in range(4):
        line.word_right()
        stops.append(line.cursor)
    assert stops == [3, 8, 14, 14]


def test_a_tab_becomes_spaces_to_the_next_tab_stop() -> None:
    line = typed("ab")
    line.tab()
    line.insert("c")
    line.tab()
    assert line.text == "ab      c       "
    wide = typed("漢字")  # four columns
    wide.tab()
    assert wide.text == "漢字    "


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


@pytest.mark.parametrize("where", ["end", "middle"])
def test_a_key_on_a_long_line_measures_only_what_is_in_view(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """What a key costs does not grow with the line: of a 2000-character line, only the
    characters around the cursor are looked at again."""
    line = InputLine()
    for ch in "word " * 400:
        line.insert(ch)
    if where == "middle":
        for _ in range(1000):
            line.left()
    line.view(80)
    looked_at: list[str] = []
    real_glyph = talk.glyph

    def counted_glyph(ch: str) -> str:
        looked_at.append(ch)
        return real_glyph(ch)

    monkeypatch.setattr(talk, "glyph", counted_glyph)
    line.insert("y")
    text, x = line.view(80)
    assert text[x - 1] == "y" and len(text) <= 80
    assert len(looked_at) <= 2 * 80, len(looked_at)
