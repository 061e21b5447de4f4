"""Unit tests of the pure pieces behind issue 8: the KeyDecoder (Alt keys, bracketed paste,
unknown escape sequences), moving by word, tabs, and reading back through the History."""

from __future__ import annotations

import curses

import pytest

import talk
from talk import ESC, History, InputLine, KeyDecoder, Pasted, first_that_fits


def decode(*keys: talk.Key, pause: bool = False) -> list[talk.Key]:
    decoder = KeyDecoder()
    out = [decoded for key in keys for decoded in decoder.feed(key)]
    return out + decoder.pause() if pause else out


def chars(text: str) -> list[talk.Key]:
    return list(text)


# -- KeyDecoder ----------------------------------------------------------------------------------


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


# -- InputLine: words and tabs -------------------------------------------------------------------


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


# -- History: reading back -----------------------------------------------------------------------


def history_of(n: int, height: int = 5) -> History:
    history = History()
    history.resize(40, height)
    for i in range(n):
        history.add("<you>", f"msg {i}")
    return history


def test_messages_arriving_while_scrolled_back_are_counted_and_the_view_stays() -> None:
    history = history_of(20)
    history.page_up()
    view = history.window()
    for i in range(3):
        history.add("<you>", f"new {i}")
    assert history.unseen == 3 and history.window() == view


def test_nothing_is_counted_while_at_the_newest() -> None:
    history = history_of(20)
    history.add("<you>", "new")
    assert history.unseen == 0 and history.window()[-1] == "<you> new"


def test_paging_down_counts_down_what_is_still_below() -> None:
    history = history_of(20)  # pages of 4 rows, 5 rows shown
    history.page_up()
    history.page_up()
    for i in range(6):
        history.add("<you>", f"new {i}")
    assert history.unseen == 6
    history.page_down()
    history.page_down()  # back where the newest was: all 6 still below
    assert history.unseen == 6 and history.window()[-1] == "<you> msg 19"
    history.page_down()
    assert history.unseen == 2 and history.window()[-1] == "<you> new 3"
    history.page_up()  # what was seen stays seen
    assert history.unseen == 2
    history.newest()
    assert history.unseen == 0 and history.scroll == 0 and history.window()[-1] == "<you> new 5"


def test_newest_is_one_step_back_after_a_flood() -> None:
    history = history_of(20)
    history.page_up()
    for i in range(3000):
        history.add("<you>", f"flood {i}")
    assert history.unseen == 3000
    history.newest()
    assert history.window()[-1] == "<you> flood 2999"


# -- fitting text --------------------------------------------------------------------------------


def test_the_first_text_that_fits_is_chosen_else_the_last_is_cut() -> None:
    assert first_that_fits(["long one", "short", "s"], 6) == "short"
    assert first_that_fits(["long one", "short"], 3) == "sho"
    assert first_that_fits(["漢字漢字"], 5) == "漢字"


def test_the_count_stays_right_when_the_oldest_messages_are_dropped() -> None:
    history = History(limit=10)
    history.resize(40, 5)
    for i in range(10):
        history.add("<you>", f"msg {i}")
    history.page_up()
    history.page_up()  # at the oldest
    assert history.window()[0] == "<you> msg 0"
    for i in range(3):
        history.add("<you>", f"new {i}")
    assert history.window()[0] == "<you> msg 3"  # the view had to move with the oldest
    assert history.unseen == 3
    history.page_down()  # 4 rows down: new 0 and new 1 come into view
    assert history.unseen == 1 and history.window()[-1] == "<you> new 1"
    history.page_down()
    assert history.unseen == 0 and history.window()[-1] == "<you> new 2"
