#!/usr/bin/env python3
"""talk: two people on one UNIX machine chat, line by line, over a UNIX socket.

This is the program from the Pubmarine "Getting Started" guide, made robust enough to use.
Read it top to bottom:

1. pure helpers (no curses, no sockets): framing a byte stream into lines, making text safe
   to draw, the line being typed, the wrapped and scrollable history;
2. ``Display``: everything curses, a context manager like in the guide;
3. ``TalkProtocol``: everything socket, an ``asyncio.Protocol`` like in the guide;
4. socket set-up: connect to someone already waiting, or wait on the socket ourselves;
5. ``main()``: one ``PubPen`` wired to the two halves, and the exit status.

The halves never call each other: they publish and subscribe to events on the shared
``PubPen``.

==============  ==========================  ================================================
event           arguments                   meaning
==============  ==========================  ================================================
``typed``       key (``str`` or ``int``)    a key pressed or text pasted (see KeyDecoder)
``outgoing``    text                        the user sent a line; it goes on the wire
``incoming``    text, who                   a line to show in the conversation
``error``       message                     a problem to show on the status line
``info``        message                     news to show on the status line
``conn_lost``   reason, exit status         the conversation is over (the peer went away)
``joined``      who                         someone called us while we waited (new: bell)
``quit``        reason, exit status         the program should end (new: ``.``, signals)
==============  ==========================  ================================================
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import curses
import errno
import fcntl
import importlib.util
import locale
import os
import pwd
import signal
import socket
import stat
import struct
import sys
import textwrap
import traceback
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any, Union


def use_own_pubmarine() -> None:
    """Make ``import pubmarine`` find the pubmarine.py that ships beside this file.

    pubmarine 0.4.3 installs a package of the same name, and where both are installed a
    package wins over a module; its PubPen has no ``drain()`` and holds callbacks weakly,
    so talk would break in confusing ways with it.
    """
    if "pubmarine" in sys.modules:
        return  # already imported, for example by a test that then imports talk
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pubmarine.py")
    spec = importlib.util.spec_from_file_location("pubmarine", here)
    if spec is None or spec.loader is None or not os.path.exists(here):
        return  # not beside us: leave it to the ordinary import
    module = importlib.util.module_from_spec(spec)
    sys.modules["pubmarine"] = module
    spec.loader.exec_module(module)


use_own_pubmarine()
from pubmarine import PubPen  # noqa: E402 (after use_own_pubmarine(), on purpose)

PATH = "/var/tmp/talk.sock"

#: Every event the parts exchange (see the table above); the PubPen rejects any other name,
#: so a typo in an event name fails loudly instead of going nowhere.
EVENTS = ("typed", "outgoing", "incoming", "error", "info", "conn_lost", "joined", "quit")

MYSELF = "<myself>"
YOU = "<you>"

#: One line on the wire is at most this many bytes; the rest of a longer one is dropped.
MAX_LINE_BYTES = 64 * 1024
CUT_MARK = " [line cut]"
#: How many messages the conversation keeps for scrolling back, and how many characters
#: at most (so 5000 maximal lines from a hostile peer cannot take gigabytes).
HISTORY_LENGTH = 5000
HISTORY_CHARS = 4_000_000
#: The smallest terminal the layout fits in: status, rule, one line of talk, rule, input.
MIN_ROWS, MIN_COLS = 5, 20
#: Tab stops every this many columns, for a tab typed or pasted into the input line.
TAB_WIDTH = 8
#: The one line a busy socket says to a third caller before hanging up.
BUSY_LINE = "talk: busy: someone is already talking on this socket"
#: How long to wait for another talk that is setting up the same socket.
LOCK_TIMEOUT = 5.0
#: How long to let unsent lines drain when hanging up.
HANGUP_TIMEOUT = 0.4

Key = Union[str, int]


class TalkError(Exception):
    """A problem to report as one ``talk: ...`` line, ending the program with status 1."""


# ---------------------------------------------------------------------------------------------
# 1. Pure helpers
# ---------------------------------------------------------------------------------------------


class LineDecoder:
    """Cut a stream of bytes into whole lines of text.

    A socket delivers bytes in whatever pieces the kernel likes: two quick messages can
    arrive together, one message (or one UTF-8 character) can arrive in two halves. Feed
    every piece in; get back only complete lines, in order. Invalid UTF-8 becomes U+FFFD.
    A line longer than ``max_bytes`` is cut there and marked; the rest of it is dropped as
    it arrives, so a peer that never sends a newline cannot make us use more memory.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pending = bytearray()
        self._cut = False

    def feed(self, data: bytes) -> list[str]:
        """Add bytes from the stream; return the lines they complete."""
        lines = []
        start = 0
        # b'\n' never occurs inside a multibyte UTF-8 character, so splitting bytes is safe.
        while (end := data.find(b"\n", start)) >= 0:
            self._keep(data[start:end])
            lines.append(self._take_line())
            start = end + 1
        self._keep(data[start:])
        return lines

    def finish(self) -> list[str]:
        """The stream ended: a last line without its newline still counts."""
        if self._pending or self._cut:
            return [self._take_line()]
        return []

    def _keep(self, chunk: bytes) -> None:
        room = self.max_bytes - len(self._pending)
        if len(chunk) > room:
            chunk = chunk[:room]
            self._cut = True
        self._pending += chunk

    def _take_line(self) -> str:
        if self._cut:
            # An incremental decoder told the input is not final leaves out a character
            # that the cut split, instead of showing it as U+FFFD.
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = decoder.decode(bytes(self._pending), final=False) + CUT_MARK
        else:
            text = self._pending.decode("utf-8", errors="replace")
            if text.endswith("\r"):
                text = text[:-1]  # a peer that ends lines with CRLF
        self._pending.clear()
        self._cut = False
        return text


def printable(text: str) -> str:
    """Return ``text`` with everything that would act on a terminal made visible and inert.

    Control characters are what let a message move the cursor, clear the screen or rewrite
    a line so that it looks like one of yours. C0 controls and DEL are spelled in caret
    notation (``^M``, ``^[``, ``^?``); C1 controls, format characters (bidirectional
    overrides, zero-width spaces), line separators, private-use and unassigned code points
    as ``<U+XXXX>``.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch.isprintable() or unicodedata.category(ch) == "Zs":
            out.append(ch)  # Zs: no-break and other spaces, harmless
        elif code < 0x20 or code == 0x7F:
            out.append("^" + chr(code ^ 0x40))
        else:
            out.append(f"<U+{code:04X}>")
    return "".join(out)


def char_width(ch: str) -> int:
    """Columns ``ch`` takes on a terminal: 2 for wide (CJK, most emoji), 0 for combining."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: Iterable[str]) -> int:
    """Columns a run of printable characters takes."""
    return sum(map(char_width, text))


def clip(text: str, width: int) -> str:
    """The longest start of ``text`` that fits in ``width`` columns."""
    used = 0
    for i, ch in enumerate(text):
        used += char_width(ch)
        if used > width:
            return text[:i]
    return text


def wrap(text: str, width: int, indent: int = 0) -> list[str]:
    """Break printable ``text`` into rows at most ``width`` columns wide.

    Rows break after a space or before a wide character where there is one, inside a word
    where there is not, and never inside a character. Rows after the first start with
    ``indent`` spaces: that is what stops a message from drawing something at the start of
    a row that looks like a message of its own.
    """
    rows: list[str] = []
    room = width
    cells: list[str] = []  # characters of the row being filled
    used = 0  # columns they take
    after_space = 0  # len(cells) just after the row's last space, 0 if none
    for ch in text:
        w = char_width(ch)
        if w == 2:
            after_space = len(cells)  # CJK text has no spaces: any wide character may start a row
        if used + w > room and cells:
            carry: list[str] = []
            if ch != " " and 0 < after_space < len(cells):
                carry = cells[after_space:]  # move the unfinished word to the next row ...
                if text_width(carry) + w <= width - indent:
                    del cells[after_space:]
                else:
                    carry = []  # ... unless it would not fit there either: break inside it
            rows.append("".join(cells))
            room = width - indent
            cells, used, after_space = carry, text_width(carry), 0
            if ch == " " and not cells:
                continue  # a space at a break would only push the next row right
        cells.append(ch)
        used += w
        if ch == " ":
            after_space = len(cells)
    rows.append("".join(cells))
    return rows[:1] + [" " * indent + row for row in rows[1:]]


class InputLine:
    """The line being typed, with the editing keys a shell user expects.

    Keeps the text and a cursor, and works out which part of a line wider than the screen
    is in view (it scrolls sideways to keep the cursor visible).
    """

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.cursor = 0  # index into chars where typing goes
        self._first = 0  # index of the first character in view

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def insert(self, ch: str) -> None:
        self.chars.insert(self.cursor, ch)
        self.cursor += 1

    def backspace(self) -> None:
        if self.cursor:
            self.cursor -= 1
            del self.chars[self.cursor]

    def delete(self) -> None:
        del self.chars[self.cursor : self.cursor + 1]

    def left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def right(self) -> None:
        self.cursor = min(len(self.chars), self.cursor + 1)

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.chars)

    def clear(self) -> None:
        self.chars.clear()
        self.cursor = self._first = 0

    def delete_word(self) -> None:
        """Delete the word before the cursor and the spaces after it, like Ctrl-W in a shell."""
        start = self.cursor
        while start and self.chars[start - 1] == " ":
            start -= 1
        while start and self.chars[start - 1] != " ":
            start -= 1
        del self.chars[start : self.cursor]
        self.cursor = start

    def word_left(self) -> None:
        """Move to the start of this word, or of the previous one (Alt-b)."""
        while self.cursor and self.chars[self.cursor - 1] == " ":
            self.cursor -= 1
        while self.cursor and self.chars[self.cursor - 1] != " ":
            self.cursor -= 1

    def word_right(self) -> None:
        """Move to the end of this word, or of the next one (Alt-f)."""
        end = len(self.chars)
        while self.cursor < end and self.chars[self.cursor] == " ":
            self.cursor += 1
        while self.cursor < end and self.chars[self.cursor] != " ":
            self.cursor += 1

    def tab(self) -> None:
        """A tab becomes spaces up to the next tab stop, as ``expandtabs()`` would make it:
        a tab character itself would reach the other side's screen as ``^I``."""
        column = text_width(self.chars[: self.cursor])
        for _ in range(TAB_WIDTH - column % TAB_WIDTH):
            self.insert(" ")

    def take(self) -> str:
        """Return the text and start a new, empty line."""
        text = self.text
        self.clear()
        return text

    def view(self, width: int) -> tuple[str, int]:
        """What fits in ``width`` columns around the cursor, and the cursor's column in it."""
        chars, cursor = self.chars, self.cursor
        first = min(self._first, cursor)
        # Scroll right until the cursor has a cell of its own inside the width ...
        before = text_width(chars[first:cursor])
        while before >= width and first < cursor:
            before -= char_width(chars[first])
            first += 1
        # ... and back left while there is room, so deleting shows the earlier text again.
        shown = before + text_width(chars[cursor : cursor + width])
        while first and shown + char_width(chars[first - 1]) < width:
            first -= 1
            step = char_width(chars[first])
            before += step
            shown += step
        self._first = first
        return clip("".join(chars[first : first + width]), width), before


class Message:
    """One line of the conversation, as shown: who said it and the (printable) text."""

    __slots__ = ("_rows", "_width", "text", "who")

    def __init__(self, who: str, text: str) -> None:
        self.who = who
        self.text = printable(text)
        self._width = 0
        self._rows: list[str] = []

    def rows(self, width: int) -> list[str]:
        """The message wrapped to ``width`` columns (remembered for the last width asked)."""
        if width != self._width:
            indent = len(self.who) + 1
            if width - indent < 10:
                indent = 2  # a narrow screen: keep most of the row for the text
            self._rows = wrap(f"{self.who} {self.text}", width, indent)
            self._width = width
        return self._rows


class History:
    """The conversation so far, wrapped to the width of the screen, and how far back we look.

    Keeps the last ``limit`` messages, fewer if they hold more than ``max_chars``
    characters. ``scroll`` counts rows back from the newest; while it is non-zero the view
    stays on what the user is reading even as new messages arrive, and ``unseen`` counts
    those of them still below the view. The Display tells it the size of the conversation
    area with ``resize()`` before asking for rows.
    """

    def __init__(self, limit: int = HISTORY_LENGTH, max_chars: int = HISTORY_CHARS) -> None:
        self.messages: deque[Message] = deque()
        self.limit = limit
        self.max_chars = max_chars
        self.chars = 0  # characters in all kept messages
        self.width = 0  # columns, and rows, of the area the conversation is shown in
        self.height = 0
        self.scroll = 0
        self.unseen = 0  # messages that arrived while scrolled back and are still below

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._scroll_to(self.scroll)

    def add(self, who: str, text: str) -> None:
        message = Message(who, text)
        self.messages.append(message)
        self.chars += len(message.text)
        while len(self.messages) > self.limit or (
            self.chars > self.max_chars and len(self.messages) > 1
        ):
            self.chars -= len(self.messages.popleft().text)
        if self.scroll:
            # Keep the view where it is: the new rows are below it, not yet seen.
            self.unseen += 1
            wanted = self.scroll + len(message.rows(self.width))
            self.scroll = self._clamped(wanted)
            if self.scroll != wanted:  # the oldest rows went: the view had to move down
                self._scroll_to(self.scroll)

    def page_up(self) -> None:
        self._scroll_to(self.scroll + self.page)

    def page_down(self) -> None:
        self._scroll_to(self.scroll - self.page)

    def newest(self) -> None:
        """Back to the newest rows, however far back the view was."""
        self._scroll_to(0)

    def _scroll_to(self, scroll: int) -> None:
        self.scroll = self._clamped(scroll)
        # What came into view has been seen: count only messages with a row still below.
        below = rows = 0
        for message in reversed(self.messages):
            if rows >= self.scroll or below >= self.unseen:
                break
            below += 1
            rows += len(message.rows(self.width))
        self.unseen = below

    @property
    def page(self) -> int:
        """How far PageUp and PageDown move: a screenful, less one row to keep the context."""
        return max(1, self.height - 1)

    def _clamped(self, scroll: int) -> int:
        """``scroll``, but no further back than the oldest row at the top of the area."""
        have = len(self._newest_rows(scroll + self.height))
        return max(0, min(scroll, have - self.height))

    def window(self) -> list[str]:
        """The rows to show in the conversation area, oldest first."""
        rows = self._newest_rows(self.height + self.scroll)
        end = len(rows) - self.scroll
        return rows[max(0, end - self.height) : end]

    def _newest_rows(self, wanted: int) -> list[str]:
        """At least the ``wanted`` newest rows (all there are, if fewer), oldest first."""
        chunks: list[list[str]] = []
        have = 0
        for message in reversed(self.messages):
            if have >= wanted:
                break
            rows = message.rows(self.width)
            chunks.append(rows)
            have += len(rows)
        return [row for chunk in reversed(chunks) for row in chunk]


def first_that_fits(candidates: Iterable[str], width: int) -> str:
    """The first of ``candidates`` (longest and fullest first) that fits in ``width``
    columns, or the last one cut to fit."""
    text = ""
    for text in candidates:
        if text_width(text) <= width:
            return text
    return clip(text, width)


class Pasted(str):
    """Text that arrived in a bracketed paste: put into the line as it is, never a command."""


#: The keys a KeyDecoder names: Alt (Meta) keys, and keys curses knows only by their
#: terminfo name (``kEND5`` is Ctrl-End, ``kEND3`` Alt-End).
ALT_KEYS: dict[Key, str] = {
    "b": "Alt-b",
    "f": "Alt-f",
    "\x7f": "Alt-Backspace",
    "\x08": "Alt-Backspace",
    curses.KEY_BACKSPACE: "Alt-Backspace",
}
CSI_KEYS = {"[1;5F": "kEND5", "[1;3F": "kEND3"}
ESC = "\x1b"


def is_char(key: Key) -> bool:
    """A character typed, as opposed to a key curses or the KeyDecoder named."""
    return isinstance(key, str) and len(key) == 1


class KeyDecoder:
    """Turn the keys curses reads into the keys talk acts on.

    In keypad mode curses turns the escape sequences that terminfo lists into ``KEY_*``
    codes, but hands anything else over one character at a time: Alt-b as ESC then ``b``,
    a bracketed paste as ESC ``[200~``, the text, ESC ``[201~``. Fed those keys one by one,
    ``feed()`` returns what they mean: Alt keys by name (``"Alt-b"``), pasted text as
    ``Pasted``, nothing at all for other escape sequences (swallowed whole, so no stray
    letters end up in the line), and every other key as it is. ``pause()`` says the
    keyboard has gone quiet: an ESC with nothing after it was the Esc key itself.
    """

    PASTE_START = "[200~"
    PASTE_END = ESC + "[201~"
    MAX_SEQUENCE = 32  # longer than any sequence talk knows: keep no more of one

    def __init__(self) -> None:
        self.sequence: str | None = None  # what followed an ESC so far, None outside one
        self.pasting = False
        self.paste_end = ""  # in a paste: the start of PASTE_END that has arrived

    def feed(self, key: Key) -> list[Key]:
        if self.pasting:
            return self._paste(key)
        if self.sequence is None:
            if key == ESC:
                self.sequence = ""
                return []
            return [key]
        return self._escape(self.sequence, key)

    def pause(self) -> list[Key]:
        if self.sequence == "" and not self.pasting:
            self.sequence = None
            return [ESC]
        return []

    def _escape(self, sequence: str, key: Key) -> list[Key]:
        if sequence == "" and key == ESC:
            return []  # Esc pressed twice: the second one may still start a sequence
        if sequence == "" and key in ("[", "O"):
            self.sequence = str(key)  # CSI or SS3: a sequence curses does not know
            return []
        self.sequence = None
        if sequence == "":
            if key in ALT_KEYS:
                return [ALT_KEYS[key]]
            return [] if is_char(key) else [key]  # an Alt-letter types nothing
        if isinstance(key, int) or len(key) != 1:
            return [key]  # a broken sequence; the key after it is real
        if sequence == "O":
            return []  # SS3 ends with its one final character
        # CSI: parameter and intermediate characters (0x20-0x3F), then one final (0x40-0x7E).
        if " " <= key <= "?":
            self.sequence = (sequence + key)[: self.MAX_SEQUENCE]  # only its start matters
            return []
        if "@" <= key <= "~":
            sequence += key
            if sequence == self.PASTE_START:
                self.pasting = True
            return [CSI_KEYS[sequence]] if sequence in CSI_KEYS else []
        return [key]  # not part of a sequence after all (a control character)

    def _paste(self, key: Key) -> list[Key]:
        if isinstance(key, int) or len(key) != 1:
            return []  # curses made a key of pasted bytes: nothing literal to keep
        candidate = self.paste_end + key
        if self.PASTE_END.startswith(candidate):
            self.paste_end = candidate
            if candidate == self.PASTE_END:
                self.pasting = False
                self.paste_end = ""
            return []
        # Not the end after all: what looked like its start was pasted text (bar the ESC).
        self.paste_end = ""
        text = candidate[1:] if candidate.startswith(ESC) else candidate
        if key == ESC:
            self.paste_end = ESC
            text = text[:-1]
        return [Pasted(text)] if text else []


# ---------------------------------------------------------------------------------------------
# 2. The display: everything that touches curses
# ---------------------------------------------------------------------------------------------

ENTER_KEYS = ("\n", "\r", curses.KEY_ENTER)
BACKSPACE_KEYS = (curses.KEY_BACKSPACE, "\x7f", "\x08")
#: Editing keys and what they do to the InputLine.
EDIT_KEYS = {
    curses.KEY_DC: InputLine.delete,
    curses.KEY_LEFT: InputLine.left,
    curses.KEY_RIGHT: InputLine.right,
    curses.KEY_HOME: InputLine.home,
    "\x01": InputLine.home,  # Ctrl-A
    curses.KEY_END: InputLine.end,
    "\x05": InputLine.end,  # Ctrl-E
    "\x15": InputLine.clear,  # Ctrl-U
    "\x17": InputLine.delete_word,  # Ctrl-W
    "Alt-b": InputLine.word_left,
    "Alt-f": InputLine.word_right,
    "Alt-Backspace": InputLine.delete_word,
    "\t": InputLine.tab,
}
for _key in BACKSPACE_KEYS:
    EDIT_KEYS[_key] = InputLine.backspace
#: Back to the newest messages, however far back the view is: Ctrl-End, or Alt-End.
NEWEST_KEYS = ("kEND5", "kEND3")
#: What the status line adds about the keys, long and short: while the conversation runs,
#: and once it is over.
QUIT_HINTS = ("type . alone on a line to quit", "type . to quit")
CLOSE_HINTS = ("press any key to close", "any key closes")
#: Terminal modes: bracketed paste marks pasted text, so that it is never taken as keys.
BRACKETED_PASTE_ON = b"\x1b[?2004h"
BRACKETED_PASTE_OFF = b"\x1b[?2004l"
#: At most this many keys are read in one go, so a big paste cannot starve the socket.
KEYS_PER_READ = 512
#: When stdin is "readable" this many times in a row without a key to read, the terminal is
#: gone (a closed pty reads as end of file forever); a real key press resets the count.
EMPTY_READS_WHEN_GONE = 100


class Display:
    """The terminal: status line, conversation, input line. Only this class touches curses.

    Layout, as in the guide::

        row 0          status line (info, error, conn_lost) and what the keys do
        row 1          ----------
        rows 2..R-3    the conversation
        row R-2        ==========
        row R-1        the input line

    Use it as a context manager: entering sets the terminal up, leaving always restores it.
    Once the conversation is over (``conn_lost``) the screen stays for reading, and the next
    key ends the program.
    """

    def __init__(self, pubpen: PubPen) -> None:
        self.pubpen = pubpen
        self.history = History()
        self.input = InputLine()
        self.status = ""
        self.keys = KeyDecoder()
        self.ending: tuple[str, int] | None = None  # why the conversation ended, exit status
        self.on_screen = False  # between __enter__ and __exit__: curses owns the terminal
        self._redraw_pending = False
        self._bell = False  # ring the terminal bell with the next screen update
        self._empty_reads = 0  # stdin said "readable" but had no key, this many times running

        self.pubpen.subscribe("incoming", self.show_message)
        self.pubpen.subscribe("typed", self.show_typing)
        # The guide shows all three on the status line with one callback, show_error().
        self.pubpen.subscribe("error", self.show_status)
        self.pubpen.subscribe("info", self.show_status)
        self.pubpen.subscribe("conn_lost", self.show_end)
        self.pubpen.subscribe("joined", self.ring)

    def __enter__(self) -> Display:
        os.environ.setdefault("ESCDELAY", "25")  # a lone Esc should not stall the keyboard
        for name in ("LINES", "COLUMNS"):  # stale after the first resize; ask the terminal
            os.environ.pop(name, None)
        self.stdscr = curses.initscr()
        self.on_screen = True
        try:
            curses.noecho()
            curses.cbreak()
            self.stdscr.keypad(True)
            # get_wch() never waits: it is only called when the event loop saw a key coming.
            self.stdscr.nodelay(True)
            with contextlib.suppress(curses.error):
                curses.curs_set(1)
            loop = self.pubpen.loop
            # No thread blocked in getch(): the loop watches stdin, so quitting is immediate.
            loop.add_reader(sys.stdin.fileno(), self.read_keys)
            loop.add_signal_handler(signal.SIGWINCH, self.resize)
            # Sizes that change without a SIGWINCH for us: while we were stopped (Ctrl-Z).
            loop.add_signal_handler(signal.SIGCONT, self.resize)
            loop.add_signal_handler(signal.SIGTSTP, self.suspend)
            self.set_terminal_modes(BRACKETED_PASTE_ON)
            self.draw()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.on_screen = False  # drawing now would take the terminal back from the shell
        loop = self.pubpen.loop
        if not loop.is_closed():
            loop.remove_reader(sys.stdin.fileno())
            for signum in (signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP):
                loop.remove_signal_handler(signum)
        with contextlib.suppress(curses.error):
            self.stdscr.keypad(False)
            curses.nocbreak()
            curses.echo()
        with contextlib.suppress(curses.error):
            curses.endwin()
        self.set_terminal_modes(BRACKETED_PASTE_OFF)

    def set_terminal_modes(self, sequence: bytes) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            os.write(sys.stdout.fileno(), sequence)

    def suspend(self) -> None:
        """Ctrl-Z: give the terminal back as the shell had it, stop, and take it again on
        ``fg`` (the size is read again then: the window may have changed meanwhile)."""
        self.set_terminal_modes(BRACKETED_PASTE_OFF)
        with contextlib.suppress(curses.error):
            curses.endwin()
        loop = self.pubpen.loop
        loop.remove_signal_handler(signal.SIGTSTP)
        # Stop the way Ctrl-Z stops a program. Without job control (nobody could ``fg`` us)
        # the kernel ignores it, and we simply go on.
        os.kill(os.getpid(), signal.SIGTSTP)
        loop.add_signal_handler(signal.SIGTSTP, self.suspend)
        self.set_terminal_modes(BRACKETED_PASTE_ON)
        self.stdscr.clearok(True)
        self.resize()

    # -- keyboard ---------------------------------------------------------------------------

    def read_keys(self) -> None:
        """Publish a ``typed`` event for each key waiting on stdin, without blocking."""
        if not self.on_screen:
            return  # get_wch() after endwin() would put the terminal back into curses mode
        for _ in range(KEYS_PER_READ):
            try:
                key = self.stdscr.get_wch()
            except curses.error:  # nothing (more) to read
                break
            self._empty_reads = 0
            if isinstance(key, int) and key > curses.KEY_MAX:
                key = curses.keyname(key).decode()  # keys terminfo names: kEND5 is Ctrl-End
            for decoded in self.keys.feed(key):
                self.pubpen.publish("typed", decoded)
        else:
            # More may be waiting; read it after whatever else is due, not before.
            self.pubpen.loop.call_soon(self.read_keys)
            return
        for decoded in self.keys.pause():  # an ESC with nothing after it: the Esc key
            self.pubpen.publish("typed", decoded)
        self._empty_reads += 1
        if self._empty_reads >= EMPTY_READS_WHEN_GONE:
            self.pubpen.loop.remove_reader(sys.stdin.fileno())
            self.pubpen.publish("quit", "the terminal went away", 1)

    def show_typing(self, key: Key) -> None:
        """Handle one key: edit the input line, send it, quit, or scroll the conversation."""
        if key in ("\x0c", curses.KEY_RESIZE):  # Ctrl-L: repaint everything
            self.stdscr.clearok(True)
            self.resize()  # Ctrl-L also catches a size change nobody told us about
            return
        rows, cols = self.stdscr.getmaxyx()
        if rows < MIN_ROWS or cols < MIN_COLS:
            return  # the input line is not on the screen: keys typed blind do nothing
        if key == curses.KEY_PPAGE:
            self.history.page_up()
        elif key == curses.KEY_NPAGE:
            self.history.page_down()
        elif key in NEWEST_KEYS:
            self.history.newest()
        elif self.ending is not None:
            self.pubpen.publish("quit", *self.ending)  # the conversation was over: any key ends
            return
        elif isinstance(key, Pasted):
            self.paste(key)
        elif key in ENTER_KEYS:
            self.send_line()
        elif key in EDIT_KEYS:
            EDIT_KEYS[key](self.input)
        elif isinstance(key, str) and len(key) == 1 and key.isprintable():
            self.input.insert(key)
        else:
            return  # other function keys and control characters do nothing
        self.redraw()

    def paste(self, text: str) -> None:
        """Pasted text is taken literally: each line is sent as it is, even a lone ``.``."""
        for ch in text:
            if ch in "\r\n":
                self.send_line(literal=True)
            elif ch == "\t":
                self.input.tab()
            elif ch.isprintable():
                self.input.insert(ch)

    def send_line(self, literal: bool = False) -> None:
        """Enter: send the line, as in the guide; but a lone ``.`` typed quits and is not sent."""
        line = self.input.take()
        if line == "." and not literal:
            self.pubpen.publish("quit", "you ended the conversation", 0)
        elif line:
            self.pubpen.publish("outgoing", line)
            self.history.newest()  # whoever sends wants to see the line go, not old ones
            self.show_message(line, MYSELF)

    # -- event callbacks ----------------------------------------------------------------------

    def show_message(self, message: str, user: str) -> None:
        """Add a line to the conversation (``user`` is ``<myself>`` or ``<you>``)."""
        self.history.add(user, message)
        self.redraw()

    def show_status(self, message: object, *_: object) -> None:
        """Show news (``info``) or a problem (``error``) on the status line."""
        self.status = printable(str(message))
        self.redraw()

    def show_end(self, reason: str, status: int) -> None:
        """The conversation is over: keep it on the screen until a key is pressed."""
        self.ending = (reason, status)
        self.redraw()

    def ring(self, *_: object) -> None:
        """Someone joined the talk we were waiting in: ring the bell, as talk(1) does."""
        self._bell = True
        self.redraw()

    def resize(self) -> None:
        """The terminal may have changed size (SIGWINCH, SIGCONT, Ctrl-L): lay it all out again."""
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(sys.stdin.fileno())
            curses.resizeterm(size.lines, size.columns)
        self.redraw()

    # -- drawing ----------------------------------------------------------------------------

    def redraw(self) -> None:
        """Ask for the screen to be drawn once the events that are due have all been handled.

        A burst of 5000 incoming lines then costs one screen update, not 5000.
        """
        if not self._redraw_pending:
            self._redraw_pending = True
            self.pubpen.loop.call_soon(self.draw)

    def draw(self) -> None:
        self._redraw_pending = False
        if not self.on_screen:
            return  # news before the screen is set up is drawn by __enter__
        scr = self.stdscr
        scr.erase()
        rows, cols = scr.getmaxyx()
        if rows < MIN_ROWS or cols < MIN_COLS:
            self.draw_too_small(rows, cols)
        else:
            self.put(0, self.status_line(cols))
            self.put(1, "-" * (cols - 1))
            self.history.resize(cols, rows - 4)
            for y, line in enumerate(self.history.window(), start=2):
                self.put(y, line)
            self.put(rows - 2, self.rule(cols - 1))
            text, x = self.input.view(cols - 1)  # the last cell of the screen stays empty
            self.put(rows - 1, text)
            scr.move(rows - 1, x)
        if self._bell:
            self._bell = False
            with contextlib.suppress(curses.error):  # a terminal with neither bell nor flash
                curses.beep()
        with contextlib.suppress(curses.error):  # e.g. the terminal was closed under us
            scr.refresh()

    def status_line(self, width: int) -> str:
        """The news, then what the keys do, shortened to fit; the news comes first because
        it says who we are talking to."""
        hints = CLOSE_HINTS if self.ending else QUIT_HINTS
        if not self.status:
            return first_that_fits(hints, width)
        return first_that_fits([*(f"{self.status} - {hint}" for hint in hints), self.status], width)

    def rule(self, width: int) -> str:
        """The rule above the input line; while reading back it says what is below."""
        if not self.history.scroll:
            return "=" * width
        n = self.history.unseen
        if n:
            notes = [f" {n} new below: Ctrl-End jumps there ", f" {n} new below ", f" {n} new "]
        else:
            notes = [" more below: PageDown or Ctrl-End ", " more below "]
        return first_that_fits(notes, width).center(width, "=")

    def draw_too_small(self, rows: int, cols: int) -> None:
        note = wrap(f"terminal too small (need {MIN_COLS}x{MIN_ROWS})", max(1, cols - 1))
        for y, line in enumerate(note[:rows]):
            self.put(y, clip(line.strip(), cols - 1))

    def put(self, y: int, text: str) -> None:
        """Write one row. ``text`` must already be printable and fit."""
        with contextlib.suppress(curses.error):
            # curses reports an error after writing the very last cell of a window, because
            # the cursor cannot move past it; the text is on the screen all the same.
            self.stdscr.addstr(y, 0, text)


# ---------------------------------------------------------------------------------------------
# 3. The network: everything that touches the socket
# ---------------------------------------------------------------------------------------------


class TalkProtocol(asyncio.Protocol):
    """Our end of the conversation: lines on the socket in, events on the PubPen out.

    The wire format is one UTF-8 line per message, ending in ``\\n``, so ``nc -U PATH``
    can take part in a conversation.
    """

    def __init__(self, pubpen: PubPen, *, dialled: str = "") -> None:
        self.pubpen = pubpen
        self.dialled = dialled  # the path we called, if we did: it may answer that it is busy
        self.first_line = True  # only the first line can be that busy notice
        self.transport: asyncio.Transport | None = None
        self.peer = ""  # who is at the other end, once connected
        self.decoder = LineDecoder()
        self.unsent: list[bytes] = []  # lines typed before anyone connected
        self.closed: asyncio.Future[None] = pubpen.loop.create_future()

        self.pubpen.subscribe("outgoing", self.send_message)

    def send_message(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", errors="replace")
        if self.transport is None:
            self.unsent.append(data)
        elif self.transport.is_closing():
            self.pubpen.publish("error", "not sent: the connection is closed")
        else:
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = peer_name(transport.get_extra_info("socket"))
        self.pubpen.publish("info", f"Talking to {self.peer}")
        if not self.dialled:
            self.pubpen.publish("joined", self.peer)
        for data in self.unsent:
            transport.write(data)
        self.unsent.clear()

    def data_received(self, data: bytes) -> None:
        self.show_lines(self.decoder.feed(data))

    def eof_received(self) -> None:
        self.show_lines(self.decoder.finish())

    def show_lines(self, lines: list[str]) -> None:
        for line in lines:
            if self.first_line and self.dialled and line == BUSY_LINE:
                self.pubpen.publish(
                    "quit",
                    f"{self.dialled} is busy: two people are already talking there; "
                    "use --socket PATH to start another conversation",
                    1,
                )
                return
            self.first_line = False
            self.pubpen.publish("incoming", line, YOU)

    def connection_lost(self, exc: Exception | None) -> None:
        # The guide also publishes ``error`` from error_received(), but asyncio calls that
        # only for datagram sockets. On a stream, a failed read or write ends the
        # connection and arrives here.
        if exc is None:
            self.pubpen.publish("info", f"{self.peer} left")
            self.pubpen.publish("conn_lost", "the other side closed the connection", 0)
        else:
            self.pubpen.publish("error", f"connection failed: {exc}")
            self.pubpen.publish("conn_lost", f"connection lost: {exc}", 1)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close our end once what we wrote has been sent (``closed`` is then done)."""
        if self.transport is not None:
            self.transport.close()
        elif not self.closed.done():
            self.closed.set_result(None)  # nobody ever connected: nothing to wait for


class BusyProtocol(asyncio.Protocol):
    """What a third caller gets: one line saying the socket is busy, then the line goes dead."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY_LINE.encode() + b"\n")
        transport.close()


def peer_name(sock: Any) -> str:
    """Who is at the other end, from the kernel (SO_PEERCRED), never from what they send."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return "someone (identity unknown)"
    pid, uid, _gid = struct.unpack("3i", creds)
    return f"{printable(user_name(uid))} (pid {pid})"


# ---------------------------------------------------------------------------------------------
# 4. Socket set-up: call whoever waits on the socket, or wait there ourselves
# ---------------------------------------------------------------------------------------------


class Call:
    """One call, from set-up to hang-up: our protocol and, for the side that waited for the
    other, its server and the socket file it created. Hanging up is its job alone."""

    def __init__(
        self,
        protocol: TalkProtocol,
        server: asyncio.AbstractServer | None = None,
        path: str = "",
        identity: tuple[int, int] = (0, 0),
    ) -> None:
        self.protocol = protocol
        self.server = server
        self.path = path
        self.identity = identity  # (st_dev, st_ino) of the socket file we created

    async def hang_up(self) -> None:
        """Remove our socket file, stop listening, and let what we wrote go out."""
        if self.server is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self.identity:  # never someone else's file
                    os.unlink(self.path)
            self.server.close()
        self.protocol.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.protocol.closed), HANGUP_TIMEOUT)
        if self.protocol.transport is not None and not self.protocol.closed.done():
            self.protocol.transport.abort()  # a peer that does not read gets no more time
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), HANGUP_TIMEOUT)


class Switchboard:
    """The server's protocol factory: the first caller gets the conversation, later ones
    are told the socket is busy (the two who are talking notice nothing)."""

    def __init__(self, protocol: TalkProtocol) -> None:
        self.protocol = protocol
        self.answered = False

    def __call__(self) -> asyncio.Protocol:
        if self.answered:
            return BusyProtocol()
        self.answered = True
        return self.protocol


def check_path(path: str) -> os.stat_result | None:
    """What is at ``path``: nothing (None) or a socket. Anything else is not ours to touch."""
    if not path or "\0" in path:
        raise TalkError(f"{path!r} is not a usable socket path")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TalkError(f"cannot use {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise TalkError(
            f"{path} exists and is not a socket; leaving it alone "
            "(use --socket PATH to choose another path)"
        )
    return st


@contextlib.asynccontextmanager
async def setup_lock(path: str) -> AsyncIterator[None]:
    """Hold an exclusive lock on the socket's directory while we connect or set up.

    Without it two talks started at the same instant could both find nothing listening,
    and the second would replace the first one's socket (a refused connection cannot tell
    a dead socket from one whose owner is between bind() and listen()). With it, whoever
    holds the lock sees the truth: a socket that refuses is stale.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise TalkError(f"cannot create socket {path}: {directory} does not exist") from None
    except OSError:
        fd = -1  # an unreadable directory cannot be locked; go on without the lock
    try:
        deadline = asyncio.get_running_loop().time() + LOCK_TIMEOUT
        while fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if asyncio.get_running_loop().time() > deadline:
                    raise TalkError(f"timed out waiting for the lock on {directory}") from None
                await asyncio.sleep(0.01)  # another talk is setting up; it takes milliseconds
            except OSError:
                break  # this file system cannot lock; go on without the lock
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # also releases the lock


async def connect_or_wait(pubpen: PubPen, path: str) -> Call:
    """Connect to whoever waits on ``path``; if nobody does, wait there for someone."""
    loop = pubpen.loop
    check_path(path)  # before connecting: a symlink to someone's socket is not ours to follow
    async with setup_lock(path):
        try:
            # Try the client side first, as in the guide.
            _transport, protocol = await loop.create_unix_connection(
                partial(TalkProtocol, pubpen, dialled=path), path
            )
            assert isinstance(protocol, TalkProtocol)
            return Call(protocol)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # nobody is there: we answer
        except OSError as e:
            raise TalkError(f"cannot connect to {path}: {e.strerror or e}") from None

        sock = listen_on(path)
        st = os.stat(path)
        protocol = TalkProtocol(pubpen)
        server = await loop.create_unix_server(Switchboard(protocol), sock=sock)
    pubpen.publish("info", f"Waiting for someone to connect to {path}")
    return Call(protocol, server, path, (st.st_dev, st.st_ino))


def listen_on(path: str) -> socket.socket:
    """Create the listening socket at ``path``, replacing a stale one. Call under the lock."""
    old = check_path(path)
    if old is not None:
        # Nobody answered while we hold the lock, so this socket is left over from a talk
        # that died without cleaning up.
        try:
            os.unlink(path)
        except PermissionError:
            owner = user_name(old.st_uid)
            raise TalkError(
                f"{path} is a stale socket owned by {owner} and cannot be removed; "
                "use --socket PATH to choose another path"
            ) from None
        except FileNotFoundError:
            pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Talk is between users: let everyone on the machine connect (the umask would not).
        os.chmod(path, 0o666)
        sock.listen(8)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise TalkError(f"{path} was taken by another program just now; try again") from None
        raise TalkError(f"cannot create socket {path}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# ---------------------------------------------------------------------------------------------
# 5. main(): wire one PubPen to the two halves
# ---------------------------------------------------------------------------------------------

#: Signals that end the program cleanly, the reason shown, and the exit status (128 + n).
ENDING_SIGNALS = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated",
    signal.SIGHUP: "hung up",
    signal.SIGQUIT: "quit",
}


async def converse(path: str, crashes: list[dict[str, Any]]) -> tuple[str, int]:
    """The guide's main block: connect (or wait for a caller), then show the conversation
    until it ends. Returns why it ended and the exit status.

    A callback that raises is a bug: it is kept in ``crashes`` for main() to print once
    the terminal is restored, and ends the program.
    """
    loop = asyncio.get_running_loop()
    pubpen = PubPen(loop, EVENTS)

    def crashed(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        crashes.append(context)
        pubpen.publish("quit", "internal error", 1)

    loop.set_exception_handler(crashed)
    display = Display(pubpen)
    ending: asyncio.Future[tuple[str, int]] = loop.create_future()

    def finish(reason: str, status: int = 0) -> None:
        if not ending.done():
            ending.set_result((reason, status))

    pubpen.subscribe("quit", finish)  # conn_lost does not end it: the Display then waits for a key
    for signum, reason in ENDING_SIGNALS.items():
        loop.add_signal_handler(signum, pubpen.publish, "quit", reason, 128 + signum)
    try:
        # The socket first: a problem with the path is then a plain message, with no
        # flash of a screen that curses sets up only to take down again.
        call = await connect_or_wait(pubpen, path)
        await pubpen.drain()  # let the Display hear the news first, so it draws it at once
        try:
            with display:
                return await ending
        finally:
            await call.hang_up()
    finally:
        for signum in ENDING_SIGNALS:
            loop.remove_signal_handler(signum)


def check_terminal() -> None:
    """Curses needs a real terminal that it knows how to drive."""
    if not os.isatty(sys.stdin.fileno()):
        raise TalkError("standard input is not a terminal")
    if not os.isatty(sys.stdout.fileno()):
        raise TalkError("standard output is not a terminal")
    try:
        curses.setupterm(fd=sys.stdout.fileno())
    except curses.error:
        term = os.environ.get("TERM", "")
        raise TalkError(f"unknown terminal type {term!r} (check TERM)") from None


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, but never breaking a key name such as Ctrl-End at its hyphen."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="talk",
        formatter_class=HelpFormatter,
        description=(
            "Chat, line by line, with another person logged into this machine. The first "
            "to start talk waits on the socket; the second connects to it. Type a line and "
            'press Enter to send it; a line with only "." quits.'
        ),
        epilog=(
            "Keys: Backspace or Ctrl-H and Delete erase, Left/Right/Home/End (Ctrl-A, Ctrl-E) "
            "move, Alt-b/Alt-f move by word, Ctrl-U clears the line, Ctrl-W or Alt-Backspace "
            "erases a word, Tab types spaces, PageUp/PageDown scroll back, Ctrl-End (or "
            "Alt-End) jumps to the newest messages, Ctrl-L repaints and re-reads the terminal "
            "size, Ctrl-C quits. Pasted text is sent as it is, one message per line (a pasted "
            '"." too). When the other side leaves, the conversation stays on the screen and '
            "any key ends talk."
        ),
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=PATH,
        help=f"the UNIX socket to meet on (default: {PATH}); pick another to have a "
        "conversation of your own",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        locale.setlocale(locale.LC_ALL, "")  # curses needs it for anything beyond ASCII
    except locale.Error:
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_ALL, "C.UTF-8")

    crashes: list[dict[str, Any]] = []
    try:
        check_terminal()
        reason, status = asyncio.run(converse(args.socket, crashes))
    except TalkError as e:
        reason, status = str(e), 1
    except KeyboardInterrupt:  # Ctrl-C before talk's own signal handlers are in place
        reason, status = "interrupted", 128 + signal.SIGINT
    # The terminal is restored by now (the Display has exited).
    for context in crashes:
        report_crash(context)
    say(f"talk: {reason}\n")
    return 1 if crashes else status


def say(text: str) -> None:
    """Write to standard error, unbuffered: the terminal may be gone (SIGHUP), and text left
    in sys.stderr's buffer would make Python's own flush at exit fail and exit 120."""
    data = text.encode(sys.stderr.encoding or "utf-8", errors="backslashreplace")
    with contextlib.suppress(OSError, ValueError):
        while data:
            data = data[os.write(sys.stderr.fileno(), data) :]


def report_crash(context: dict[str, Any]) -> None:
    say(f"talk: {context.get('message', 'unexpected error')}\n")
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        say("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


if __name__ == "__main__":
    sys.exit(main())
