#!/usr/bin/env python3
"""talk: two people on one UNIX machine chat, line by line, over a UNIX socket.

This is the program from the Pubmarine "Getting Started" guide, made robust enough to use.
Read it top to bottom. Part I is the guide's program, ``python3 talk.py``, whole:

1. pure helpers (no curses, no sockets): framing a byte stream into lines, making text safe
   to draw, the line being typed, the wrapped and scrollable history, naming the keys;
2. ``Display``: everything curses, a context manager like in the guide;
3. ``TalkProtocol``: everything socket, an ``asyncio.Protocol`` like in the guide;
4. socket set-up: connect to someone already waiting, or wait on the socket ourselves, at
   the places a ``Meeting`` names and letting in whom it admits;
5. ``main()``: one ``PubPen`` wired to the two halves, and the exit status.

Part II is about *whom* you talk to: a call to one person (``talk.py USER``, 6), the talk
daemon and talk(1)'s own wire, so that talk(1) and ytalk users can answer and call (7),
telling the person without a daemon, through write(1) (8), who is calling you (9,
``--list``), and a call to someone on another machine, through ssh (10, ``USER@HOST``).
It reaches Part I through one seam only: a call is a ``Meeting`` of its own (its places,
whom it admits, what a refused caller is told, how the person is told, the other ways it
may be reached), and Part I never asks which kind it was handed.

The halves never call each other: they publish and subscribe to events on the shared
``PubPen``. Events carry data, not sentences: who is at the other end travels as a ``Peer``,
and the Display decides how to word it.

==============  ==========================  ================================================
event           arguments                   meaning
==============  ==========================  ================================================
``typed``       key (``str`` or ``int``)    a key pressed or text pasted (see KeyDecoder)
``outgoing``    text                        the user sent a line; it goes on the wire
``incoming``    text, who                   a line to show in the conversation
``error``       message                     a problem to show on the status line
``info``        message                     news to show on the status line
``conn_lost``   reason, exit status         the conversation is over (the peer left or failed)
``joined``      peer, called us             the other side is there (new: who, and the bell)
``live``        text                        what a talk(1) peer has typed of its next line
``quit``        reason, exit status         the program should end (new: ``.``, signals)
==============  ==========================  ================================================
"""

# =============================================================================================
# Part I: the guide's program
# =============================================================================================

from __future__ import annotations

import signal
import sys

# One line rather than a traceback from what needs 3.9 below (up to here, and in the syntax
# of the whole file, talk.py is kept to what Python 3.7 reads).
if sys.version_info < (3, 9):  # noqa: UP036
    major, minor = sys.version_info[:2]
    sys.exit(f"talk: needs Python 3.9 or later; this is Python {major}.{minor}")

if __name__ == "__main__":
    # Before the imports below take their tens of milliseconds: until talk has handlers of
    # its own, Ctrl-C ends it at once and quietly, as SIGTERM and SIGHUP do: by the signal
    # itself (status 130 in the shell). There is nothing to clean up yet. Not by raising an
    # exception from a handler: one raised in a finalizer or a weak reference's callback (the
    # import system has those) is printed and dropped, and talk would run on as if no Ctrl-C
    # had come. (Python's own KeyboardInterrupt would also print a traceback.)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # talk never speaks TLS, and asyncio imports the ssl module (a tenth of talk's start-up)
    # only to offer it: run as a program, talk does without it. Start-up is a budget.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio
import codecs
import contextlib
import curses
import importlib.util
import locale
import os
import pwd
import re
import shutil
import socket
import stat
import struct
import textwrap
import traceback
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, NoReturn, Union, cast

if TYPE_CHECKING:  # imported where they are used, not at start-up, which is a budget
    import argparse
    import subprocess


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
try:
    # After use_own_pubmarine(), on purpose. The version of talk is the version of its bus:
    # the two ship together, and setup.cfg reads it from pubmarine.py.
    from pubmarine import PubPen, __version__

    if not hasattr(PubPen, "drain"):  # pubmarine 0.4.3, installed, and ours not beside us
        raise ImportError("the pubmarine found is another one")
except ImportError as error:
    if __name__ != "__main__":
        raise
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(f"talk: needs the pubmarine.py that ships with it, beside talk.py in {here} ({error})")

PATH = "/var/tmp/talk.sock"

#: Every event the parts exchange (see the table above); the PubPen rejects any other name,
#: so a typo in an event name fails loudly instead of going nowhere.
EVENTS = (
    "typed", "outgoing", "incoming", "error", "info", "conn_lost", "joined", "live", "quit"
)  # fmt: skip

MYSELF = "<myself>"
YOU = "<you>"

Key = Union[str, int]


class TalkError(Exception):
    """A problem to report as one ``talk: ...`` line, ending the program with status 1."""


# ---------------------------------------------------------------------------------------------
# 1. Pure helpers
# ---------------------------------------------------------------------------------------------

#: One line on the wire is at most this many bytes; the rest of a longer one is dropped.
MAX_LINE_BYTES = 64 * 1024
CUT_MARK = " [line cut]"


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
        end = data.find(b"\n", start)
        while end >= 0:
            self._keep(data[start:end])
            lines.append(self._take_line())
            start = end + 1
            end = data.find(b"\n", start)
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


def _c_library_wcwidth() -> Callable[[int], int] | None:
    """The C library's ``wcwidth()``, through ctypes; None where it cannot be found."""
    import ctypes  # here: a screen of ASCII never needs it

    if ctypes.sizeof(ctypes.c_wchar) != 4:
        return None  # a 16-bit wchar_t cannot hold every code point
    try:
        function = ctypes.CDLL(None).wcwidth  # the C library this process (and curses) uses
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int32]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


def _estimated_width(code: int) -> int:
    """What the C library would say, where there is none to ask (an estimate from Unicode)."""
    ch = chr(code)
    if not ch.isprintable() and unicodedata.category(ch) != "Zs":
        return -1
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _first_measure(code: int) -> int:
    """Find the C library's wcwidth() the first time a width is measured."""
    global _measure_width
    _measure_width = _c_library_wcwidth() or _estimated_width
    return _measure_width(code)


_measure_width = _first_measure
#: What char_width() has measured so far: one byte per code point (the width + 2; 0 for not
#: measured yet), so the memory is 1.1 MB whatever a peer sends.
_widths = bytearray(sys.maxunicode + 1)


def char_width(ch: str) -> int:
    """Columns ``ch`` takes on the terminal: what the C library's ``wcwidth()`` says in the
    current locale, because that is what curses draws with.

    2 for wide characters (CJK, most emoji), 0 for combining ones, -1 for those curses
    cannot draw (printable() spells those as ``<U+XXXX>``). Remembered, as wrapping 5000
    messages asks for every character again; forget_widths() when the locale changes.
    """
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return 1  # printable ASCII: one column in every locale
    known = _widths[code]
    if not known:
        known = _widths[code] = max(-1, min(2, _measure_width(code))) + 2
    return known - 2


def forget_widths() -> None:
    """The locale changed: measure every character again."""
    _widths[:] = bytes(len(_widths))


def glyph(ch: str) -> str:
    """How one character is drawn: itself, or spelled out when it could act on the terminal
    or when curses cannot draw it.

    Control characters are what let a message move the cursor, clear the screen or rewrite
    a line so that it looks like one of yours. C0 controls and DEL are spelled in caret
    notation (``^M``, ``^[``, ``^?``); C1 controls, format characters (bidirectional
    overrides, zero-width spaces), line separators, private-use and unassigned code points,
    and whatever the C library cannot draw in this locale as ``<U+XXXX>``.
    """
    if (ch.isprintable() or unicodedata.category(ch) == "Zs") and char_width(ch) >= 0:
        return ch  # Zs: no-break and other spaces, harmless
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)
    return f"<U+{code:04X}>"


def printable(text: str) -> str:
    """Return ``text`` with every character drawn as glyph() draws it: visible and inert."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(map(glyph, text))


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
    # ASCII (most messages, and every spelled-out character) is one column a character.
    widths = [1] * len(text) if text.isascii() else list(map(char_width, text))
    rows: list[str] = []
    room = width
    start = 0  # where the row being filled starts in text
    used = 0  # columns from there up to the character at hand
    after_space = 0  # where a row may start: after the row's last space; <= start if none
    for i, (ch, w) in enumerate(zip(text, widths)):
        if w == 2:
            after_space = i  # CJK text has no spaces: any wide character may start a row
        if used + w > room and i > start:
            cut = i
            if ch != " " and start < after_space < i:
                # Move the unfinished word to the next row, unless it would not fit there
                # either (then break inside it).
                fits = sum(widths[after_space:i]) + w <= width - indent
                cut = after_space if fits else i
            rows.append(text[start:cut])
            room = width - indent
            start, used, after_space = cut, sum(widths[cut:i]), cut
            if ch == " " and cut == i:
                start = after_space = i + 1  # a space at a break would push the next row right
                continue
        used += w
        if ch == " ":
            after_space = i + 1
    rows.append(text[start:])
    return rows[:1] + [" " * indent + row for row in rows[1:]]


#: Tab stops every this many columns, for a tab typed or pasted into the input line.
TAB_WIDTH = 8


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
        """What fits in ``width`` columns around the cursor, and the cursor's column in it.

        Each character is shown as glyph() shows it, so a control character or one that
        curses cannot draw is spelled out: nothing typed is hidden, and nothing acts on the
        terminal. Only the characters near the cursor are measured: a key costs the same on
        a line of 2000 characters as on an empty one.
        """
        chars, cursor = self.chars, self.cursor
        glyphs: dict[int, str] = {}

        def shown_as(i: int) -> str:
            if i not in glyphs:
                glyphs[i] = glyph(chars[i])
            return glyphs[i]

        def cells(i: int) -> int:
            g = shown_as(i)
            return char_width(g) if len(g) == 1 else len(g)  # spelled out: ASCII

        # The first character in view: where the view was, unless the cursor has gone left
        # of it, or so far right that it has no cell of its own inside the width; then the
        # leftmost one from which it has.
        first = min(self._first, cursor)
        before = 0
        start = cursor
        while start > first and before + cells(start - 1) < width:
            start -= 1
            before += cells(start)
        first = start
        # Back left while there is room, so deleting shows the earlier text again.
        end = min(len(chars), cursor + width)
        shown = before + sum(cells(i) for i in range(cursor, end))
        while first and shown + cells(first - 1) < width:
            first -= 1
            before += cells(first)
            shown += cells(first)
        self._first = first
        text = "".join(shown_as(i) for i in range(first, end))
        if first < len(chars) and cells(first) == 0:
            # A combining character whose base is out of view (or was never typed) gets a
            # blank to sit on: at the start of a row curses would put it on the row above.
            text = " " + text
            before += 1
        return clip(text, width), before


#: How many messages the conversation keeps for scrolling back, and how many characters
#: at most (so 5000 maximal lines from a hostile peer cannot take gigabytes).
HISTORY_LENGTH = 5000
HISTORY_CHARS = 4_000_000


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

    def window(self) -> list[tuple[str, str]]:
        """The rows to show in the conversation area, oldest first, each with who said it
        (``<myself>`` or ``<you>``)."""
        rows = self._newest_rows(self.height + self.scroll)
        end = len(rows) - self.scroll
        return rows[max(0, end - self.height) : end]

    def _newest_rows(self, wanted: int) -> list[tuple[str, str]]:
        """At least the ``wanted`` newest rows (all there are, if fewer), oldest first, each
        with who said it."""
        chunks: list[list[str]] = []
        speakers: list[str] = []
        have = 0
        for message in reversed(self.messages):
            if have >= wanted:
                break
            rows = message.rows(self.width)
            chunks.append(rows)
            speakers.append(message.who)
            have += len(rows)
        return [
            (who, row) for who, chunk in zip(reversed(speakers), reversed(chunks)) for row in chunk
        ]


def first_that_fits(candidates: Iterable[str], width: int) -> str:
    """The first of ``candidates`` (longest and fullest first) that fits in ``width``
    columns, or the last one cut to fit."""
    text = ""
    for text in candidates:
        if text_width(text) <= width:
            return text
    return clip(text, width)


class Peer(NamedTuple):
    """Who is at the other end, as the kernel tells it, never as they say: their login name
    (``uid N`` for a uid without one, empty where the system cannot say), the pid of their
    program (0 where the kernel does not say: over TCP), and how they came: ``socket``,
    straight to our UNIX socket; ``talkd``, through the talk daemon, on talk(1)'s wire;
    ``ssh``, forwarded by sshd for the user it authenticated; ``tunnel`` (``your tunnel``),
    a socket forwarded by someone's (your own) ssh client, whose far end nobody here knows."""

    login: str
    pid: int
    via: str = "socket"

    def __str__(self) -> str:
        """``alice (pid 10294)``, ``bob (via talkd)``, ``alice (through ssh, pid 4242)``,
        ``your ssh tunnel (pid 777)``: the peer named in full."""
        if not self.login:
            return "someone (identity unknown)"
        if self.tunnel:
            return f"{self.name} (pid {self.pid})"
        if self.via == "ssh":
            return f"{self.name} (through ssh, pid {self.pid})"
        return f"{self.name} (pid {self.pid})" if self.pid else f"{self.name} (via {self.via})"

    @property
    def tunnel(self) -> bool:
        """An ssh client's forwarded socket: who is at its far end is not known here."""
        return self.via.endswith("tunnel")

    @property
    def name(self) -> str:
        """The login name alone (for a tunnel, whose tunnel): the part of a status line that
        is never shortened."""
        if self.tunnel:
            mine = self.via == "your tunnel"
            return "your ssh tunnel" if mine else f"{printable(self.login)}'s ssh tunnel"
        return printable(self.login) if self.login else "someone"


class Pasted(str):
    """Text that arrived in a bracketed paste: put into the line as it is, never a command."""


class News(str):
    """News for the status line (``info``), with ever shorter ways to say it, most important
    part first: the Display shows the fullest that fits, and while it waits, the whole of it
    in the conversation area when the status line cannot hold it."""

    shorter: tuple[str, ...] = ()

    def __new__(cls, full: str, *shorter: str) -> News:
        news = super().__new__(cls, full)
        news.shorter = tuple(dict.fromkeys(form for form in shorter if form != full))
        return news

    @property
    def forms(self) -> tuple[str, ...]:
        return (str(self), *self.shorter)


#: What the Backspace key sends, by terminal: curses' name for it, DEL, or Ctrl-H.
BACKSPACE_KEYS: tuple[Key, ...] = (curses.KEY_BACKSPACE, "\x7f", "\x08")
#: The keys a KeyDecoder names: Alt (Meta) keys (ALT_KEYS, by the key after the ESC), and
#: Ctrl-End and Alt-End where terminfo lacks their sequences (CSI_KEYS). They get the names
#: read_keys() gives them where curses knows them by terminfo name: ``kEND5``, ``kEND3``.
ALT_KEYS: dict[Key, str] = {
    "b": "Alt-b",
    "f": "Alt-f",
    **dict.fromkeys(BACKSPACE_KEYS, "Alt-Backspace"),
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

#: What a key does: something to the Display (its input line, its history, the screen).
Action = Callable[["Display"], None]


def edit(method: Callable[[InputLine], None]) -> Action:
    """The action of a key that edits the line being typed."""
    return lambda display: method(display.input)


def look(method: Callable[[History], None]) -> Action:
    """The action of a key that moves through the conversation."""
    return lambda display: method(display.history)


class KeyRow(NamedTuple):
    """One row of the key table: the keys as the help names them, what they do, and the
    action of each key. ``works`` says when: ``typing``, while the conversation runs;
    ``reading``, after it is over too; ``always``, even while the terminal is too small."""

    keys: str
    does: str
    actions: dict[Key, Action]
    works: str = "typing"


ENTER_KEYS: tuple[Key, ...] = ("\n", "\r", curses.KEY_ENTER)
#: Every key talk acts on. The Display acts on keys by this table, and ``--help`` (and the
#: README's table of keys, checked by a test) are made from it, so they cannot disagree.
#: Rows without actions are keys handled elsewhere: ``.`` by send_line(), Ctrl-C by the
#: signal it sends. A character not in the table is typed into the line.
KEYS = (
    KeyRow(
        "Enter",
        "send the line (an empty line sends nothing)",
        dict.fromkeys(ENTER_KEYS, lambda display: display.send_line()),
    ),
    KeyRow(". alone on a line, then Enter", "quit (the . is not sent)", {}),
    KeyRow(
        "Backspace, Ctrl-H",
        "delete the character before the cursor",
        dict.fromkeys(BACKSPACE_KEYS, edit(InputLine.backspace)),
    ),
    KeyRow(
        "Delete", "delete the character under the cursor", {curses.KEY_DC: edit(InputLine.delete)}
    ),
    KeyRow(
        "Left, Right, Home, End, Ctrl-A, Ctrl-E",
        "move in the line (a long line scrolls sideways)",
        {
            curses.KEY_LEFT: edit(InputLine.left),
            curses.KEY_RIGHT: edit(InputLine.right),
            curses.KEY_HOME: edit(InputLine.home),
            curses.KEY_END: edit(InputLine.end),
            "\x01": edit(InputLine.home),
            "\x05": edit(InputLine.end),
        },
    ),
    KeyRow(
        "Alt-b, Alt-f",
        "move a word left, right",
        {"Alt-b": edit(InputLine.word_left), "Alt-f": edit(InputLine.word_right)},
    ),
    KeyRow("Ctrl-U", "clear the line", {"\x15": edit(InputLine.clear)}),
    KeyRow(
        "Ctrl-W, Alt-Backspace",
        "delete the word before the cursor",
        dict.fromkeys(("\x17", "Alt-Backspace"), edit(InputLine.delete_word)),
    ),
    KeyRow(
        "Tab",
        f"type spaces up to the next tab stop (every {TAB_WIDTH} columns)",
        {"\t": edit(InputLine.tab)},
    ),
    KeyRow(
        "PageUp, PageDown",
        f"scroll back through the conversation (the last {HISTORY_LENGTH} messages); the "
        "bottom rule says 3 new below (or more below) until you are back",
        {curses.KEY_PPAGE: look(History.page_up), curses.KEY_NPAGE: look(History.page_down)},
        "reading",
    ),
    KeyRow(
        "Ctrl-End (or Alt-End)",
        "jump back to the newest messages; sending a line does too",
        dict.fromkeys(("kEND5", "kEND3"), look(History.newest)),  # named by read_keys()
        "reading",
    ),
    KeyRow(
        "Ctrl-L",
        "repaint the screen and read the terminal's size again (for when no resize signal came)",
        dict.fromkeys(("\x0c", curses.KEY_RESIZE), lambda display: display.repaint()),
        "always",
    ),
    KeyRow(
        "Esc, or Enter on an empty line",
        "close talk once the other side has left (what you typed stays until then)",
        {ESC: lambda display: display.close_if_over()},
        "reading",
    ),
    KeyRow("Ctrl-C", "quit", {}),
)
#: Each key of the table, with when it works and what it does.
KEY_ACTIONS = {key: (row.works, action) for row in KEYS for key, action in row.actions.items()}
#: What the status line adds about the keys, long and short: while the conversation runs,
#: and once it is over.
QUIT_HINTS = ("type . alone on a line to quit", "type . to quit", ". quits")
CLOSE_HINTS = ("Esc or Enter on an empty line closes", "Esc closes")
#: The smallest terminal the layout fits in: status, rule, one line of talk, rule, input.
MIN_ROWS, MIN_COLS = 5, 20
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

        row 0          status line (info, error, who we talk to) and how to quit (or,
                       after conn_lost, how to close)
        row 1          ----------
        rows 2..R-3    the conversation (its last row, while a talk(1) peer is typing a
                       line: that line, as it is typed)
        row R-2        ==========
        row R-1        the input line

    Use it as a context manager: entering sets the terminal up, leaving always restores it.
    Once the conversation is over (``conn_lost``) the screen stays for reading: the scrolling
    keys still scroll, typing still edits the line, and Esc or Enter on an empty line ends
    the program (unless someone calls again first: ``joined`` starts a new conversation).
    """

    def __init__(self, pubpen: PubPen) -> None:
        self.pubpen = pubpen
        self.history = History()
        self.input = InputLine()
        #: The status line's news, fullest first, then ever shorter ways to say the same.
        self.status: tuple[str, ...] = ()
        self.peer: Peer | None = None  # who is at the other end, once someone is
        self.live = ""  # what a talk(1) peer has typed of its next line, printable
        self.keys = KeyDecoder()
        self.ending: tuple[str, int] | None = None  # why the conversation ended, exit status
        self.on_screen = False  # between __enter__ and __exit__: curses owns the terminal
        self._redraw_pending = False
        self._bell = False  # ring the terminal bell with the next screen update
        self._empty_reads = 0  # stdin said "readable" but had no key, this many times running
        self.sizeless = False  # the terminal says it is 0x0: nothing fits until it resizes

        self.pubpen.subscribe("incoming", self.show_message)
        self.pubpen.subscribe("typed", self.show_typing)
        # The guide shows error, info and conn_lost on the status line with one callback,
        # show_error(); here conn_lost has one of its own, as it also changes what keys do.
        self.pubpen.subscribe("error", self.show_status)
        self.pubpen.subscribe("info", self.show_status)
        self.pubpen.subscribe("conn_lost", self.show_end)
        self.pubpen.subscribe("joined", self.show_peer)
        self.pubpen.subscribe("live", self.show_live)

    def __enter__(self) -> Display:
        os.environ.setdefault("ESCDELAY", "25")  # a lone Esc should not stall the keyboard
        for name in ("LINES", "COLUMNS"):  # stale after the first resize; ask the terminal
            os.environ.pop(name, None)
        loop = self.pubpen.loop
        # Before initscr(): ncurses then leaves SIGTSTP alone. Finding it at its default, it
        # would take it over and ignore it during every screen update, and a Ctrl-Z pressed
        # then would be lost.
        loop.add_signal_handler(signal.SIGTSTP, self.suspend)
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
            # No thread blocked in getch(): the loop watches stdin, so quitting is immediate.
            loop.add_reader(sys.stdin.fileno(), self.read_keys)
            # curses fell back to the terminfo size for a terminal that says 0x0; we do not.
            self.sizeless = 0 in terminal_size()
            loop.add_signal_handler(signal.SIGWINCH, self.resize)
            # Sizes that change without a SIGWINCH for us: while we were stopped (Ctrl-Z).
            loop.add_signal_handler(signal.SIGCONT, self.resize)
            to_terminal(BRACKETED_PASTE_ON)
            # Send what curses has queued to set the terminal up (it turns autowrap on), so
            # that draw() can turn autowrap off before the first screen.
            self.stdscr.refresh()
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
        set_autowrap(True)  # the shell expects long lines to wrap again
        with contextlib.suppress(curses.error):
            self.stdscr.keypad(False)
            curses.nocbreak()
            curses.echo()
        with contextlib.suppress(curses.error):
            curses.endwin()
        to_terminal(BRACKETED_PASTE_OFF)
        if self.ending is not None:
            # The other side left while a reply was being typed: the rest of it must not end
            # up in the shell as a command.
            import termios

            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)

    def suspend(self) -> None:
        """Ctrl-Z: give the terminal back as the shell had it (everything talk changed, as
        at exit), stop, and take it again on ``fg`` (the size is read again then: the window
        may have changed meanwhile)."""
        to_terminal(BRACKETED_PASTE_OFF)
        set_autowrap(True)
        with contextlib.suppress(curses.error):
            curses.endwin()
        loop = self.pubpen.loop
        loop.remove_signal_handler(signal.SIGTSTP)
        # Stop the way Ctrl-Z stops a program. Without job control (nobody could ``fg`` us)
        # the kernel ignores it, and we simply go on.
        os.kill(os.getpid(), signal.SIGTSTP)
        loop.add_signal_handler(signal.SIGTSTP, self.suspend)
        to_terminal(BRACKETED_PASTE_ON)
        # endwin() turned keypad mode off; without it, the cursor keys would arrive as
        # sequences curses does not know.
        with contextlib.suppress(curses.error):
            self.stdscr.keypad(True)
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
        """Handle one key: do what the key table says, or type the character into the line."""
        # Pasted text is text, whatever it spells: it is never looked up as a key.
        bound = None if isinstance(key, Pasted) else KEY_ACTIONS.get(key)
        works, action = bound or ("typing", None)
        if self.too_small and works != "always":
            return  # the input line is not on the screen: keys typed blind do nothing
        if action is not None:
            action(self)
        elif isinstance(key, Pasted):
            self.paste(key)
        elif isinstance(key, str) and len(key) == 1 and unicodedata.category(key) != "Cc":
            self.input.insert(key)  # anything but a control key; view() spells it if need be
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
            elif unicodedata.category(ch) != "Cc":
                self.input.insert(ch)  # as typed: view() spells out what cannot be drawn

    def send_line(self, literal: bool = False) -> None:
        """Enter: send the line, as in the guide; but a lone ``.`` typed quits and is not sent.

        Once the other side has left, Enter on an empty line closes talk, and a line typed
        stays where it is: there is nobody to send it to.
        """
        if self.ending is not None:
            if not self.input.chars:
                self.close_if_over()
            elif self.peer is not None:
                self.status = (f"not sent: {self.peer.name} left",)
            return
        line = self.input.take()
        if line == "." and not literal:
            self.pubpen.publish("quit", "you ended the conversation", 0)
        elif line:
            self.pubpen.publish("outgoing", line)
            self.history.newest()  # whoever sends wants to see the line go, not old ones
            self.show_message(line, MYSELF)

    def close_if_over(self) -> None:
        """Esc: once the conversation is over, end talk (with why it ended)."""
        if self.ending is not None:
            self.pubpen.publish("quit", *self.ending)

    def repaint(self) -> None:
        """Ctrl-L: draw everything anew, and catch a size change nobody told us about."""
        self.stdscr.clearok(True)
        self.resize()

    # -- event callbacks ----------------------------------------------------------------------

    def show_message(self, message: str, user: str) -> None:
        """Add a line to the conversation (``user`` is ``<myself>`` or ``<you>``)."""
        self.history.add(user, message)
        self.redraw()

    def show_live(self, text: str) -> None:
        """A talk(1) peer sends each key as it is typed: show its line as it grows."""
        self.live = printable(text)
        self.redraw()

    def show_status(self, message: object, *_: object) -> None:
        """Show news (``info``) or a problem (``error``) on the status line."""
        forms = message.forms if isinstance(message, News) else (str(message),)
        self.status = tuple(printable(form) for form in forms)
        self.redraw()

    def show_peer(self, peer: Peer, called_us: bool) -> None:
        """The other side is there: say who it is, and ring the bell if they called us (the
        talk was waiting for them), as talk(1) rings for a call. Someone who calls after the
        other side left starts a new conversation on the same screen."""
        last = self.peer if self.ending is not None else None  # who had left, if anyone
        self.ending = None
        if peer.tunnel:
            # Never "Talking to <you>": the program at the other end is your own ssh.
            self.status = (
                f"Talking through {peer}: who is at the far end is not known here",
                f"Talking through {peer.name}",
                f"through {peer.name}",
            )
        elif last is not None and peer.login == last.login:
            self.status = (f"{peer} is back", f"{peer.name} is back", peer.name)
        else:
            # Shorter and shorter: the pid goes first, then the words around the login name.
            self.status = (f"Talking to {peer}", f"Talking to {peer.name}", peer.name)
        self.peer = peer
        self._bell = self._bell or called_us
        self.redraw()

    def show_end(self, reason: str, status: int) -> None:
        """The conversation is over: keep it on the screen until a key is pressed."""
        self.ending = (reason, status)
        if status == 0 and self.peer is not None:  # they left; an error says so itself
            if self.peer.tunnel:
                self.status = (f"The far end of {self.peer} hung up", "The far end hung up")
            else:
                self.status = (f"{self.peer} left", f"{self.peer.name} left")
        self.redraw()

    def resize(self) -> None:
        """The terminal may have changed size (SIGWINCH, SIGCONT, Ctrl-L): lay it all out again."""
        lines, columns = terminal_size()
        # Some terminals say 0x0 for a moment (so does `stty rows 0 cols 0`): curses cannot
        # take that size, and nothing fits in it, so it is a too small terminal until the
        # next resize.
        self.sizeless = 0 in (lines, columns)
        if not self.sizeless:
            with contextlib.suppress(curses.error):
                curses.resizeterm(lines, columns)
        self.redraw()

    # -- drawing ----------------------------------------------------------------------------

    def redraw(self) -> None:
        """Ask for the screen to be drawn once the events that are due have all been handled.

        A burst of 5000 incoming lines then costs one screen update, not 5000.
        """
        if not self._redraw_pending:
            self._redraw_pending = True
            self.pubpen.loop.call_soon(self.draw)

    @property
    def too_small(self) -> bool:
        """The layout does not fit (or the terminal says it is 0x0): only a note is drawn,
        and keys other than Ctrl-L are not acted on."""
        rows, cols = self.stdscr.getmaxyx()
        return self.sizeless or rows < MIN_ROWS or cols < MIN_COLS

    def draw(self) -> None:
        self._redraw_pending = False
        if not self.on_screen:
            return  # news before the screen is set up is drawn by __enter__
        scr = self.stdscr
        scr.erase()
        rows, cols = scr.getmaxyx()
        if self.too_small:
            self.draw_too_small(rows, cols)
        else:
            status = self.status_line(cols)
            self.put(0, status)
            self.put(1, "-" * (cols - 1))
            live = 1 if self.live else 0
            note = self.whole_news(status, cols - 1, (rows - 4) // 2)
            for y, line in enumerate(note, start=2):
                self.put(y, line)
            self.history.resize(cols, rows - 4 - live - len(note))
            for y, (who, line) in enumerate(self.history.window(), start=2 + len(note)):
                # Your own lines are bold, and nothing else ever is: a peer can make its text
                # look like anything but that.
                self.put(y, line, curses.A_BOLD if who == MYSELF else curses.A_NORMAL)
            if live:
                self.put(rows - 3, live_row(self.live, cols - 1))
            self.put(rows - 2, self.rule(cols - 1))
            text, x = self.input.view(cols - 1)  # the last cell of the screen stays empty
            self.put(rows - 1, text)
            scr.move(rows - 1, x)
        # Rows are measured as curses measures them, but the terminal has tables of its own:
        # where it finds a row wider than curses did, it must not carry the rest into the
        # next row (curses turns wrapping on again when it resumes; hence every time).
        set_autowrap(False)
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
        if self.peer is None or self.ending:
            # Waiting, or the other side left: the way out is always shown, and the news as
            # fully as fits beside it (its shorter forms keep what matters most); at last cut.
            candidates = [f"{form} - {hint}" for form in self.status for hint in hints]
            shortest = f" - {hints[-1]}"
            candidates.append(clip(self.status[-1], width - text_width(shortest)) + shortest)
        else:
            # Talking: who it is with matters more than the hint.
            candidates = [f"{self.status[0]} - {hint}" for hint in hints] + list(self.status)
        return first_that_fits(candidates, width)

    def whole_news(self, status: str, width: int, room: int) -> list[str]:
        """While nobody is there, the conversation area is free: when the status line could
        not say all of the news, the whole of it goes at the top, so nothing is lost."""
        if self.peer is not None or self.ending or not self.status or room < 1:
            return []
        news = self.status[0]
        if status.startswith(f"{news} - "):
            return []
        return [clip(row.strip(), width) for row in wrap(news, width)][:room]

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
        """Say so, and the size it needs, which is kept when there is little room."""
        width = max(1, cols - 1)
        need = f"need {MIN_COLS}x{MIN_ROWS}"
        size = "it says 0x0; " if self.sizeless else ""
        for text in (f"terminal too small ({size}{need})", f"too small: {need}", need):
            note = [line.strip() for line in wrap(text, width)]
            if len(note) <= rows and all(text_width(line) <= width for line in note):
                break
        for y, line in enumerate(note[:rows]):
            self.put(y, clip(line, width))

    def put(self, y: int, text: str, attr: int = curses.A_NORMAL) -> None:
        """Write one row. ``text`` must already be printable and fit.

        Should curses find it wider than char_width() did after all, the rest is cut off
        rather than carried to the start of the next row, where it could pass for a line of
        its own.
        """
        scr = self.stdscr
        with contextlib.suppress(curses.error):
            # curses reports an error after writing the very last cell of a window, because
            # the cursor cannot move past it; the text is on the screen all the same.
            scr.addstr(y, 0, text, attr)
        end_y, end_x = scr.getyx()
        if end_y == y or (end_y, end_x) == (y + 1, 0):  # (y + 1, 0): the row is exactly full
            return
        # The rows below are drawn after this one: clear what spilled onto them, and write
        # the row again one character at a time, stopping where one would leave the row.
        for spilled in range(y, end_y + 1):
            scr.move(spilled, 0)
            scr.clrtoeol()
        scr.move(y, 0)
        for ch in text:
            with contextlib.suppress(curses.error):
                scr.addstr(ch, attr)
            if scr.getyx()[0] != y:
                with contextlib.suppress(curses.error):
                    scr.move(y + 1, 0)
                    scr.clrtoeol()
                break


def live_row(text: str, width: int) -> str:
    """``<you> what they type``, in ``width`` columns: the end of it, where they type, if
    it is longer."""
    prefix = f"{YOU} "
    room = width - text_width(prefix)
    if text_width(text) <= room:
        return prefix + text
    if room < 2:
        return clip(prefix, width)
    kept = len(text)
    used = 1  # the mark that says the start is cut off
    while kept and used + char_width(text[kept - 1]) <= room:
        kept -= 1
        used += char_width(text[kept])
    return f"{prefix}<{text[kept:]}"


def terminal_size() -> tuple[int, int]:
    """(rows, columns) the terminal says it has; (0, 0) if it cannot say."""
    try:
        size = os.get_terminal_size(sys.stdin.fileno())
    except OSError:
        return 0, 0
    return size.lines, size.columns


def to_terminal(sequence: bytes) -> None:
    """Send ``sequence`` straight to the terminal, past curses and past C's stdio buffer
    (curses.putp() writes there, and it is flushed long after curses has sent the screen)."""
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        os.write(sys.stdout.fileno(), sequence)


def set_autowrap(on: bool) -> None:
    """Let the terminal carry text at the right margin to the next row, or not.

    Only where curses does not count on it: a terminal with the "newline glitch" (xenl, as
    every xterm-like one has) leaves curses unsure where the cursor is after the last column,
    so curses moves it explicitly wherever it writes next.
    """
    if curses.tigetflag("xenl") <= 0:
        return
    sequence = curses.tigetstr("smam" if on else "rmam")
    if sequence:
        to_terminal(sequence)


# ---------------------------------------------------------------------------------------------
# 3. The network: everything that touches the socket
# ---------------------------------------------------------------------------------------------

#: Lines typed before anyone connected, or while the other side does not read, wait to be
#: sent: at most this many bytes of them (asyncio buffers 64 KiB more, the kernel some
#: 200 KiB). A line that does not fit is not sent, and the status line says so.
MAX_UNSENT_BYTES = 256 * 1024
#: How many received lines are published in one turn of the event loop: a turn that
#: handles more keeps the keyboard waiting (a flood of 100,000 lines would hold a key
#: for a quarter of a second).
LINES_PER_TURN = 500
#: How long a refused caller has to read its line and hang up, how much of what it sends
#: meanwhile is read (and dropped) before it is cut off, and how many may linger at once.
REFUSAL_LINGER = 2.0
MAX_REFUSED_BYTES = 64 * 1024
MAX_LINGERING = 16
#: How a call through a tunnel that nobody at the far end answered ends.
NOBODY_AT_THE_FAR_END = "nobody answered at the other end of the tunnel"
#: The process names (``/proc/PID/comm``) of OpenSSH's client and server: a peer that is one
#: of them forwards a socket from elsewhere. (OpenSSH 9.8 and later run ``sshd-session``.)
SSH_CLIENTS = ("ssh",)
SSH_SERVERS = ("sshd", "sshd-session")
#: The end of every message about a socket that is busy with someone else.
ANOTHER_CONVERSATION = "use --socket PATH to start another conversation"


class TalkProtocol(asyncio.Protocol):
    """Our end of the conversation: lines on the socket in, events on the PubPen out.

    The wire format is one UTF-8 line per message, ending in ``\\n``, so ``nc -U PATH``
    can take part in a conversation. (Part II's ``TalkdProtocol`` speaks talk(1)'s wire.)
    """

    #: What goes out first, before any line, on this wire: nothing here.
    GREETING = b""
    #: How callers on this wire come, for Peer.via.
    VIA = "socket"

    def __init__(self, pubpen: PubPen, *, dialled: str = "") -> None:
        self.pubpen = pubpen
        self.dialled = dialled  # the path we called, if we did: it may answer with a Refusal
        self.first_line = True  # only the first line can be a refusal
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None  # who is at the other end, once connected
        self.decoder = LineDecoder()
        self.unsent: deque[bytes] = deque()  # lines that wait for a transport with room
        self.unsent_bytes = 0
        self.paused = False  # the transport's buffer is full: the other side is not reading
        self.closed: asyncio.Future[None] = pubpen.loop.create_future()
        self.heard = False  # anything at all came from the other side
        self.backlog: deque[str] = deque()  # lines received, not yet published (a flood)
        self.backlog_due = False  # publish_backlog() is to run in the next turn
        self.reading_paused = False

        self.sending = self.pubpen.subscribe("outgoing", self.send_message)

    def send_message(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", errors="replace")
        if self.transport is not None and self.transport.is_closing():
            self.pubpen.publish("error", "not sent: the connection is closed")
        elif self.transport is None or self.paused or self.unsent:
            self.hold(data, message)
        else:
            self.transport.write(data)

    def hold(self, data: bytes, message: str) -> None:
        """Keep a line until it can be sent; drop it, and say so, if too much already waits.

        Nothing blocks meanwhile: the keyboard, the screen and ``.`` keep working.
        """
        if self.unsent_bytes + len(data) > MAX_UNSENT_BYTES:
            why = "nobody is connected" if self.transport is None else "they are not reading"
            self.pubpen.publish("error", f"not sent ({why}): {message}")
            return
        self.unsent.append(data)
        self.unsent_bytes += len(data)

    def send_unsent(self) -> None:
        """Hand waiting lines to the transport, in order, until its buffer is full."""
        while self.unsent and not self.paused:
            assert self.transport is not None
            if self.transport.is_closing():
                return
            data = self.unsent.popleft()
            self.unsent_bytes -= len(data)
            self.transport.write(data)  # calls pause_writing() once the buffer is full

    def pause_writing(self) -> None:
        """asyncio: the transport holds 64 KiB the other side has not read; stop writing."""
        self.paused = True

    def resume_writing(self) -> None:
        """asyncio: the other side has read most of it; what waits can go out."""
        self.paused = False
        self.send_unsent()

    def take_unsent(self, other: TalkProtocol) -> None:
        """Take over the lines ``other`` holds, typed while nobody was connected: the caller
        came on another wire (Part II), and gets them all the same."""
        self.pubpen.unsubscribe(other.sending)
        self.unsent, self.unsent_bytes = other.unsent, other.unsent_bytes
        other.unsent, other.unsent_bytes = deque(), 0

    @staticmethod
    def credentials(transport: asyncio.BaseTransport) -> Credentials | None:
        """Who is at the other end of ``transport``, from the kernel (SO_PEERCRED)."""
        return peer_credentials(transport.get_extra_info("socket"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = peer_of(self.credentials(transport), self.VIA, self.dialled)
        self.pubpen.publish("joined", self.peer, not self.dialled)
        self.send_unsent()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self.take_lines(self.decoder.feed(data))

    def eof_received(self) -> None:
        self.take_lines(self.decoder.finish())

    def take_lines(self, lines: list[str]) -> None:
        """Lines from the other side, for the conversation: at most LINES_PER_TURN in each
        turn of the event loop, with reading paused while more wait. A flood then never
        holds up the keyboard for longer than that: keys are read in every turn."""
        self.backlog.extend(lines)
        if not self.backlog_due:
            self.publish_backlog()

    def publish_backlog(self, everything: bool = False) -> None:
        self.backlog_due = False
        count = len(self.backlog) if everything else min(len(self.backlog), LINES_PER_TURN)
        self.publish_lines([self.backlog.popleft() for _ in range(count)])
        if self.transport is None:
            return
        if self.backlog:
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            self.backlog_due = True
            self.pubpen.loop.call_soon(self.publish_backlog)
        elif self.reading_paused and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def publish_lines(self, lines: list[str]) -> None:
        """Each line for the conversation; but the first line from a talk we called may say
        that it will not talk to us, which ends the program."""
        for line in lines:
            refused = None
            if self.first_line and self.dialled and self.peer is not None:
                refused = Refusal.heard(line, self.dialled, self.peer)
            if refused is not None:
                self.pubpen.publish("quit", refused, 1)
                return
            self.first_line = False
            self.pubpen.publish("incoming", line, YOU)

    def connection_lost(self, exc: Exception | None) -> None:
        # The guide also publishes ``error`` from error_received(), but asyncio calls that
        # only for datagram sockets. On a stream, a failed read or write ends the
        # connection and arrives here.
        self.publish_backlog(everything=True)  # what they said comes before that they left
        self.pubpen.unsubscribe(self.sending)  # lines typed from now on are for a new peer
        if exc is None and self.nobody_answered():
            self.pubpen.publish("error", NOBODY_AT_THE_FAR_END)
            self.pubpen.publish("conn_lost", NOBODY_AT_THE_FAR_END, 1)
        elif exc is None:
            self.pubpen.publish("conn_lost", "the other side closed the connection", 0)
        else:
            self.pubpen.publish("error", f"connection failed: {exc}")
            self.pubpen.publish("conn_lost", f"connection lost: {exc}", 1)
        if not self.closed.done():
            self.closed.set_result(None)

    def nobody_answered(self) -> bool:
        """A tunnel we called closed without a word: ssh accepts the call itself, then hangs
        up when nothing answers at the far end (and a talk there would have sent something
        before it hung up, or at least stayed)."""
        forwarded = self.peer is not None and (self.peer.tunnel or self.peer.via == "ssh")
        return bool(self.dialled) and forwarded and not self.heard

    def close(self) -> None:
        """Close our end once what we wrote has been sent (``closed`` is then done)."""
        if self.transport is not None:
            self.transport.close()
        elif not self.closed.done():
            self.closed.set_result(None)  # nobody ever connected: nothing to wait for


class Refusal(asyncio.Protocol):
    """What a caller who may not join gets: one line saying why, then the line goes dead.

    The line is ``talk: busy: ...`` (two are already talking) or ``talk: private: ...``
    (the talk waits for someone else). A talk that called reads it back with heard().
    """

    BUSY = "talk: busy: someone is already talking on this socket"
    transport: asyncio.Transport | None = None
    timer: asyncio.TimerHandle | None = None  # when a lingering caller is cut off
    unread = 0  # bytes of theirs read (and dropped) meanwhile
    #: The refused callers who still have time to read their line.
    lingering: ClassVar[set[asyncio.Transport]] = set()
    PRIVATE = "talk: private: "
    #: What each kind of refusal leaves the caller to do.
    KINDS = (("busy", f"; {ANOTHER_CONVERSATION}"), ("private", ""))

    def __init__(self, line: str, greeting: bytes = b"") -> None:
        self.line = line
        self.greeting = greeting  # what the caller's wire expects first (TalkProtocol.GREETING)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Closing with what the caller sent still unread resets the connection (on TCP and
        # on a UNIX socket alike), and the caller may never read our line. So: say it, stop
        # sending, read what they send, and close when they do (or soon, if they do not; at
        # once, if many already linger: someone floods the socket).
        try:
            transport.write(self.greeting + self.line.encode() + b"\n")
            if len(Refusal.lingering) >= MAX_LINGERING or not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()
        except OSError:  # the caller has already hung up: there is nobody left to tell
            transport.abort()
            return
        Refusal.lingering.add(transport)
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            Refusal.lingering.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        """What a refused caller says is read, never shown; past a bound it is cut off."""
        self.unread += len(data)
        if self.unread > MAX_REFUSED_BYTES and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> None:
        return None  # and close

    @classmethod
    def heard(cls, line: str, place: str, peer: Peer) -> str | None:
        """Why the program we called at ``place`` turned us away, if ``line`` is a refusal;
        else None. It is that program's word, not ours, and said as such: whoever listens
        there can send these lines."""
        found = cls.kind(line)
        if found is None:
            return None
        kind, way_out = found
        why = printable(line[len(f"talk: {kind}: ") :])
        return f"the program at {place} ({peer.name}'s) says it is {kind}: {why}{way_out}"

    @classmethod
    def kind(cls, line: str) -> tuple[str, str] | None:
        """The kind of refusal ``line`` is, and what it leaves the caller to do; or None."""
        for kind, way_out in cls.KINDS:
            if line.startswith(f"talk: {kind}: "):
                return kind, way_out
        return None


#: The kernel's ``struct ucred``: a pid (signed) and a uid and gid (unsigned: uid 3000000000 is
#: a uid like any other).
UCRED = struct.Struct("=iII")


class Credentials(NamedTuple):
    """Who runs the program at the other end of a UNIX socket, from the kernel."""

    pid: int
    uid: int


def peer_credentials(sock: Any) -> Credentials | None:
    """The credentials of the other end (SO_PEERCRED); None where the system cannot say."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    except (AttributeError, OSError):
        return None
    pid, uid, _gid = UCRED.unpack(creds)
    return Credentials(pid, uid)


def peer_of(creds: Credentials | None, via: str = "socket", place: str = "") -> Peer:
    """The Peer that ``creds`` name: the login name of their uid, their pid, and whether
    it is ssh forwarding a socket from elsewhere (``place``: the socket we called)."""
    if creds is None:
        return Peer("", 0, via)
    forwarded = forwarding(creds, place)
    if forwarded == "tunnel" and creds.uid == os.getuid():
        forwarded = "your tunnel"
    return Peer(user_name(creds.uid), creds.pid, forwarded or via)


def forwarding(creds: Credentials | None, place: str = "") -> str:
    """``tunnel`` if the program at the other end is an ssh client (a forwarded socket:
    nobody here knows who is at its far end), ``ssh`` if it is sshd (forwarding for the
    user it authenticated, whom the uid names), else empty. The name of a process is the
    kernel's; only its owner (or root) can change it. If the process that listens at
    ``place`` (the socket we called) is gone, it is whoever holds that socket now."""
    if creds is None or creds.pid <= 0:
        return ""
    name = process_name(creds.pid)
    if name is None and place:
        name = process_name(listener_pid(place))
    if name in SSH_CLIENTS:
        return "tunnel"
    return "ssh" if name in SSH_SERVERS else ""


def process_name(pid: int) -> str | None:
    """What the kernel calls process ``pid`` (``/proc/PID/comm``); None if it is gone."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return None


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# ---------------------------------------------------------------------------------------------
# 4. Socket set-up: call whoever waits on the socket, or wait there ourselves
# ---------------------------------------------------------------------------------------------

#: How many times set-up looks at the places again after one changed under it (another talk
#: set up there at the same instant). A look takes microseconds, so only someone who keeps
#: changing the path on purpose can use them all up; nothing in set-up waits.
SETUP_ROUNDS = 20
#: The end of every message about a path talk cannot use.
WAY_OUT = "use --socket PATH to choose another path"
#: How many places a meeting has: its path, then the path with ``.1``, ``.2``, ``.3``, so that
#: what someone left (or put) at the path does not stop anyone from meeting.
PLACES = 4
#: A listener with a full queue of calls is not a place held by someone: most likely someone
#: floods it with calls. Look again this often, for this long, before going elsewhere.
FULL_QUEUE_RETRY = 0.02
FULL_QUEUE_PATIENCE = 3.0
#: How long to let unsent lines drain when hanging up.
HANGUP_TIMEOUT = 0.4
#: What identifies one socket file, so that talk never removes a file it did not mean to:
#: (device, inode, modification time). The time tells apart a new file that got the inode
#: number of a removed one.
FileId = tuple[int, int, int]


class Taken(TalkError):
    """Something at a place that talk may not use and leaves alone. ``what`` says what it is
    in a few words, and whose (``a stale socket of amy's``)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path} is {what}")
        self.what = what


class QueueFull(Taken):
    """The program listening at a place has more calls waiting than it takes."""


class Held(NamedTuple):
    """A place set-up could not use, and why in a few words: someone the Meeting does not
    admit listens there (``held by mallory``), or what is there is Taken."""

    place: str
    what: str

    def __str__(self) -> str:
        """``talk.sock is held by mallory``, for the status line and errors."""
        return f"{os.path.basename(self.place)} is {self.what}"


def places_from(path: str) -> list[str]:
    """The places of a meeting at ``path``, in the order both sides try them."""
    return [path] + [f"{path}.{n}" for n in range(1, PLACES)]


class Meeting:
    """Where to meet and whom to let in: all that set-up asks about a conversation.

    This one is the guide's: the one shared socket, where the first to come waits and anyone
    may join. A call to one person (Part II) is a Meeting of its own, with places, a rule
    and a way of telling the person; set-up never asks which kind it was handed.
    """

    #: The mode of the socket file we wait on: everyone may connect (that takes write
    #: permission); the read bits, which connecting does not use, tell --list what kind of
    #: meeting waits there without anyone calling it: here, all set (a shared socket).
    mode = 0o666

    def __init__(self, path: str) -> None:
        #: Where to meet, in order: set-up calls the first where an admitted talk waits,
        #: and otherwise waits at the first place that is free.
        self.places = places_from(path)

    def admits(self, creds: Credentials | None) -> bool:
        """Whether we talk to the program at the other end (one that calls us, or one that
        we call), named by the kernel."""
        return True

    def may_call(self, owner: int) -> bool:
        """Whether to call a listener whose socket file ``owner`` made. Calling is not
        harmless: a listener that is an ssh tunnel hands the call on to its far end, and
        uses up a call there. So a Meeting calls only a listener it could admit."""
        return True

    def refusal(self) -> str:
        """The one line for a caller it does not admit."""
        return Refusal.BUSY

    def turned_away(self, peer: Peer) -> str:
        """News for the status line: ``peer`` called and was not let in."""
        return f"Turned away {peer}"

    def nowhere(self, held: list[Held]) -> TalkError:
        """The error when no place is free: what is at each."""
        return path_error(f"no free place at {self.places[0]}: " + "; ".join(map(str, held)))

    def waiting(self, place: str, held: list[Held]) -> str:
        """News for the status line: we wait at ``place`` (the others are ``held``)."""
        waiting = f"Waiting for someone to connect to {place}"
        return News(f"{waiting}{held_note(held)}", waiting, "Waiting for someone")

    async def call_elsewhere(self, pubpen: PubPen) -> Call | None:
        """Nobody we admit waits at the places: the Call to whoever waits for us some other
        way, if anyone does; on the shared socket, there is no other way."""
        return None

    async def announce(self, pubpen: PubPen, call: Call, place: str, held: list[Held]) -> None:
        """Tell whoever should know that we wait at ``place`` (and take callers who come
        some other way into ``call``); on the shared socket, nobody. Cancelled once someone
        joins, or when talk ends."""


def path_error(message: str) -> TalkError:
    return TalkError(f"{message}; {WAY_OUT}")


def held_note(held: list[Held]) -> str:
    """`` (talk.sock is held by amy)``: the places we could not use, for a status line."""
    return f" ({'; '.join(map(str, held))})" if held else ""


class Call:
    """One call, from set-up to hang-up: our protocol and, for the side that waited for the
    other, its server, the socket file it created and the task that tells the person it
    waits for. Hanging up is its job alone."""

    def __init__(
        self,
        protocol: TalkProtocol,
        server: asyncio.AbstractServer | None = None,
        path: str = "",
        identity: FileId = (0, 0, 0),
    ) -> None:
        self.protocol = protocol
        self.server = server
        self.path = path
        self.identity = identity  # the socket file we created
        self.telling: asyncio.Future[None] | None = None  # Meeting.announce(), while we wait

    def stop_telling(self, *_: object) -> None:
        """Someone joined (or we hang up): nobody needs telling any more, not even once."""
        if self.telling is not None:
            self.telling.cancel()

    async def hang_up(self) -> None:
        """Remove our socket file, stop listening, and let what we wrote go out."""
        self.stop_telling()
        if self.telling is not None:  # let it withdraw what it left (talkd's invitation)
            await asyncio.wait((self.telling,), timeout=HANGUP_TIMEOUT)
        if self.server is not None:
            remove_own_socket(self.path, self.identity)
            self.server.close()
        self.protocol.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.protocol.closed), HANGUP_TIMEOUT)
        if self.protocol.transport is not None and not self.protocol.closed.done():
            self.protocol.transport.abort()  # a peer that does not read gets no more time
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), HANGUP_TIMEOUT)


class Doorkeeper(asyncio.Protocol):
    """Meets every caller at the server: lets the first one the Meeting admits through to
    the conversation and turns everyone else away with one line (a Refusal). Whoever is
    waiting sees only a note on the status line; the two who are talking notice nothing.
    Once the other side has left, the next caller the Meeting admits starts a new
    conversation, on the same screen.

    ``wire`` is the protocol callers at this server speak: the guide's lines here, talk(1)'s
    at the TCP port a private call leaves with the talk daemon (Part II)."""

    def __init__(
        self, meeting: Meeting, call: Call, wire: type[TalkProtocol] = TalkProtocol
    ) -> None:
        self.meeting = meeting
        self.call = call
        self.wire = wire

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        creds = self.wire.credentials(transport)
        protocol = self.call.protocol
        door: asyncio.Protocol
        if protocol.transport is not None and not protocol.closed.done():
            door = Refusal(Refusal.BUSY, self.wire.GREETING)  # someone is talking with us
        elif not self.meeting.admits(creds):
            door = Refusal(self.meeting.refusal(), self.wire.GREETING)
            turned_away = self.meeting.turned_away(peer_of(creds, self.wire.VIA))
            protocol.pubpen.publish("info", turned_away)
        else:
            if protocol.transport is not None:  # that conversation is over: a new one
                protocol = self.call.protocol = self.wire(protocol.pubpen)
            elif type(protocol) is not self.wire:  # the first caller came on another wire
                fresh = self.wire(protocol.pubpen)
                fresh.take_unsent(protocol)
                protocol = self.call.protocol = fresh
            door = protocol
        transport.set_protocol(door)
        door.connection_made(transport)


async def connect_or_wait(pubpen: PubPen, meeting: Meeting) -> Call:
    """Connect to whoever waits at the meeting's places; if nobody does, wait there.

    There is no lock that a stranger could hold: a socket appears at a place only once it
    is already listening (it is made under a private name and linked into place, which
    fails if the path is taken). So two talks that arrive at the same instant cannot both
    end up waiting: the one that loses the race to create the socket finds the other's
    there on its next look, and a socket that refuses a call is stale, never one that is
    still being set up.

    The places are tried in order: the first where a talk the meeting admits is listening
    is called; places held by anyone else, or that talk cannot use, are skipped (and named
    on the status line); otherwise we wait at the first free one.
    """
    for place in meeting.places:
        if not place or "\0" in place:
            raise path_error(f"{place!r} is not a usable socket path")
    loop = pubpen.loop
    patience = loop.time() + FULL_QUEUE_PATIENCE
    rounds = 0
    asked_elsewhere = False
    while rounds < SETUP_ROUNDS:
        # Try the client side first, as in the guide.
        free: list[str] = []
        held: list[Held] = []
        queue_full = False
        for place in meeting.places:
            try:
                sock = dial(place, meeting.may_call)
            except QueueFull as e:
                if loop.time() < patience:
                    queue_full = True  # look again from the start: it may be who we want
                    break
                held.append(Held(place, e.what))
                continue
            except Taken as e:
                held.append(Held(place, e.what))
                continue
            if sock is None:
                free.append(place)
                continue
            holder = peer_credentials(sock)
            if not meeting.admits(holder):
                sock.close()
                name = "someone" if holder is None else user_name(holder.uid)
                held.append(Held(place, f"held by {name}"))
                continue
            _transport, protocol = await loop.create_unix_connection(
                partial(TalkProtocol, pubpen, dialled=place), sock=sock
            )
            assert isinstance(protocol, TalkProtocol)
            return Call(protocol)
        if queue_full:
            await asyncio.sleep(FULL_QUEUE_RETRY)
            continue
        rounds += 1
        if not asked_elsewhere:
            asked_elsewhere = True
            elsewhere = await meeting.call_elsewhere(pubpen)
            if elsewhere is not None:
                return elsewhere
        # Nobody is there: we answer, unless another talk just got there first.
        if not free:
            raise meeting.nowhere(held)
        listening = listen_on(free[0], meeting.mode)
        if listening is not None:
            return await wait_on(pubpen, meeting, free[0], listening, held)
    raise path_error(f"{meeting.places[0]} keeps changing while talk sets up")


async def wait_on(
    pubpen: PubPen,
    meeting: Meeting,
    place: str,
    listening: tuple[socket.socket, FileId],
    held: list[Held],
) -> Call:
    """Serve on the socket that ``listen_on()`` made at ``place``, say so, and tell whoever
    the meeting tells."""
    sock, identity = listening
    call = Call(TalkProtocol(pubpen), path=place, identity=identity)
    try:
        call.server = await pubpen.loop.create_unix_server(
            partial(Doorkeeper, meeting, call), sock=sock
        )
    except BaseException:  # cancelled by a signal: leave nothing behind
        remove_own_socket(place, identity)
        sock.close()
        raise
    pubpen.publish("info", meeting.waiting(place, held))
    call.telling = asyncio.ensure_future(meeting.announce(pubpen, call, place, held))
    pubpen.subscribe("joined", call.stop_telling)
    return call


def file_id(st: os.stat_result) -> FileId:
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def is_same_file(path: str, wanted: FileId) -> bool:
    """Whether ``path`` (not following a link) is still the file ``wanted``."""
    try:
        return file_id(os.lstat(path)) == wanted
    except OSError:
        return False


def dial(path: str, may_call: Callable[[int], bool] = lambda owner: True) -> socket.socket | None:
    """A socket connected to whoever listens at ``path``; None if nobody does (nothing is
    there, or a stale socket that is then removed). A listener whose socket file's owner
    ``may_call`` refuses is not called at all, only named (``Taken``): the kernel's socket
    table says whether it is live.

    The path is opened without following a symbolic link and the call goes through that
    open file (``/proc/self/fd/N``): what talk connects to is what it checked, even if the
    path is swapped for a link in between.
    """
    fd = open_socket_file(path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not may_call(st.st_uid) and is_listening(st, listening_files()):
            raise Taken(path, f"held by {user_name(st.st_uid)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # A UNIX socket connects or fails at once; nothing is ever left in progress.
            sock.connect(f"/proc/self/fd/{fd}")
        except OSError:
            sock.close()
            raise
        return sock
    except ConnectionRefusedError:
        remove_stale(path, file_id(st))
        return None
    except BlockingIOError:  # EAGAIN: the listener has more calls queued than it takes
        # Not "held by" its owner: it may well be the one we call, flooded by someone else.
        raise QueueFull(path, "not taking calls (its queue is full)") from None
    except PermissionError:
        owner = user_name(st.st_uid)
        raise Taken(path, f"a socket of {owner}'s that you may not connect to") from None
    except OSError as e:
        raise path_error(f"cannot connect to {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


#: The kernel's socket table, as ``ss -xl`` reads it (sock_diag over netlink).
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x301
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
UDIAG_SHOW_VFS = 2
UNIX_DIAG_VFS = 1
NETLINK_HEADER = struct.Struct("=IHHII")


#: Socket files that some process listens on, by (device, inode) as the kernel's socket
#: table names them, each with the inode of the listening socket itself.
SocketFiles = dict[tuple[int, int], int]


def listening_files() -> SocketFiles | None:
    """(device, inode) of every socket file that some process listens on, each with the
    inode of the listening socket itself; None if the system cannot say. Asking the kernel
    disturbs nobody; calling each socket to see whether it answers would look like a caller
    to a talk that waits there."""
    request = struct.pack(
        "=BBHIIIII",
        socket.AF_UNIX,
        0,
        0,
        1 << TCP_LISTEN,
        0,
        UDIAG_SHOW_VFS,
        0xFFFFFFFF,
        0xFFFFFFFF,
    )
    header = NETLINK_HEADER.pack(
        NETLINK_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, 1, 0
    )
    found: SocketFiles = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as table:
            table.send(header + request)
            while True:
                data = table.recv(1 << 16)
                offset = 0
                while offset + NETLINK_HEADER.size <= len(data):
                    length, kind = NETLINK_HEADER.unpack_from(data, offset)[:2]
                    if kind == NLMSG_DONE:
                        return found
                    if kind == NLMSG_ERROR or length < NETLINK_HEADER.size:
                        return None
                    # The attributes follow the header and a 16-byte unix_diag_msg, which
                    # holds the socket's own inode after its family, type, state and pad.
                    message = offset + NETLINK_HEADER.size
                    (socket_inode,) = struct.unpack_from("=I", data, message + 4)
                    attribute, end = message + 16, offset + length
                    while attribute + 4 <= end:
                        size, kind = struct.unpack_from("=HH", data, attribute)
                        if size < 4:
                            break
                        if kind == UNIX_DIAG_VFS:
                            inode, device = struct.unpack_from("=II", data, attribute + 4)
                            found[device, inode] = socket_inode
                        attribute += (size + 3) & ~3
                    offset += (length + 3) & ~3
    except OSError:
        return None


def is_listening(st: os.stat_result, live: SocketFiles | None) -> bool:
    """Whether some process listens on the socket file ``st`` (if we cannot tell: yes)."""
    return live is None or table_key(st) in live


def table_key(st: os.stat_result) -> tuple[int, int]:
    """A socket file as the kernel's socket table names it: its dev_t, and 32 bits of its
    inode (XFS, tmpfs with inode64 have more)."""
    return os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino & 0xFFFFFFFF


def listener_pid(path: str) -> int:
    """The pid of a process of ours (of anyone's, for root) that holds the socket listening
    at ``path``; 0 if there is none we may see. SO_PEERCRED names the process that called
    listen(), which may be gone: ``ssh -f`` forks once its forwarding is up."""
    try:
        inode = (listening_files() or {}).get(table_key(os.lstat(path)))
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    if inode is None:
        return 0
    wanted = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")  # only our own processes, unless root
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return int(pid)
    return 0


def open_socket_file(path: str) -> int | None:
    """An ``O_PATH`` descriptor of the socket at ``path``, or None if nothing is there.

    Anything that is not a socket, a symbolic link included, is left alone.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise path_error(f"cannot use {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        os.close(fd)
        raise Taken(path, f"{kind_of_file(st.st_mode)} of {user_name(st.st_uid)}'s, not a socket")
    return fd


def kind_of_file(mode: int) -> str:
    """``a directory``, ``a symbolic link``, ...: what is at a path instead of a socket."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return kind
    return "a FIFO" if stat.S_ISFIFO(mode) else "a file"


def private_name(path: str) -> str:
    """A new, unguessable name beside ``path``, for a file nobody else knows about yet."""
    directory = os.path.dirname(os.path.abspath(path))
    # os.urandom() is what the secrets module reads too, without its imports at start-up.
    return os.path.join(directory, f".talk-{os.urandom(6).hex()}")


def remove_stale(path: str, stale: FileId) -> None:
    """Remove the stale socket ``stale`` from ``path``, and nothing else.

    Another talk may have replaced it with its live socket since we looked, so what is at
    ``path`` is first moved aside to a private name; it is removed there if it is the
    stale socket, and put back otherwise (with ``link()``, which never replaces anything).
    """
    aside = private_name(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another talk removed it first
    except PermissionError:
        if is_same_file(path, stale):
            owner = user_name(os.lstat(path).st_uid)
            raise Taken(path, f"a stale socket of {owner}'s that you may not remove") from None
        return  # it is not the stale socket any more: look again
    except OSError as e:
        raise path_error(f"cannot remove the stale socket {path}: {e.strerror or e}") from None
    if is_same_file(aside, stale):
        os.unlink(aside)
        return
    try:
        os.link(aside, path)
    except OSError:
        raise path_error(
            f"{path} changed while talk was removing a stale socket there; "
            f"what was there is now {aside}"
        ) from None
    os.unlink(aside)


def listen_on(path: str, mode: int) -> tuple[socket.socket, FileId] | None:
    """A socket listening at ``path`` and its file; None if another program got there first.

    The socket is bound and listening under a private name before it appears at ``path``
    (``link()`` puts it there only if the path is free). Its ``mode`` (see Meeting.mode) is
    set by the umask at ``bind()``: a ``chmod(path)`` afterwards could be sent through a link
    that someone put at the path in between.
    """
    private = private_name(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        umask = os.umask(0o777 & ~mode)  # a socket is made 0o777 & ~umask
        try:
            sock.bind(private)
        finally:
            os.umask(umask)
        st = os.lstat(private)
        if not stat.S_ISSOCK(st.st_mode):  # replaced: only where others may write the directory
            sock.close()
            return None
        sock.listen(8)
        os.link(private, path)
    except FileExistsError:
        sock.close()
        return None
    except OSError as e:
        sock.close()
        directory = os.path.dirname(private)
        reason = e.strerror or str(e)
        if not os.path.isdir(directory):
            reason = f"{directory} does not exist"
        raise path_error(f"cannot create socket {path}: {reason}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(private)
    sock.setblocking(False)
    return sock, file_id(st)


def remove_own_socket(path: str, identity: FileId) -> None:
    """Remove the socket file we created at ``path``, if it is still there; never another."""
    if is_same_file(path, identity):
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------
# 5. main(): wire one PubPen to the two halves
# ---------------------------------------------------------------------------------------------

#: Signals that end the program cleanly, the reason shown, and the exit status (128 + n).
ENDING_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated",
    signal.SIGHUP: "hung up",
    signal.SIGQUIT: "quit",
}


async def converse(meeting: Meeting, crashes: list[dict[str, Any]]) -> tuple[str, int]:
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
        # flash of a screen that curses sets up only to take down again. A signal during
        # set-up ends it there and then.
        setting_up = asyncio.ensure_future(connect_or_wait(pubpen, meeting))
        await asyncio.wait((setting_up, ending), return_when=asyncio.FIRST_COMPLETED)
        if not setting_up.done():  # the program is to end before set-up did
            setting_up.cancel()
            await asyncio.wait((setting_up,))
        if setting_up.cancelled():
            return ending.result()
        call = setting_up.result()
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
    term = os.environ.get("TERM", "")
    try:
        curses.setupterm(fd=sys.stdout.fileno())
    except curses.error:
        raise TalkError(f"unknown terminal type {term!r} (check TERM)") from None
    if not curses.tigetstr("cup"):
        # dumb, hardcopy and glass terminals: curses would print the screen as a stream of
        # text instead of drawing it.
        raise TalkError(
            f"terminal type {term!r} cannot move the cursor, which talk needs (check TERM)"
        )


def use_locale() -> None:
    """Use the user's locale: curses draws and reads characters, and char_width() measures
    them, through the C library, which needs it for anything beyond ASCII.

    The C or POSIX locale (none chosen, one that is not installed, or ``LC_ALL=C``) knows
    only ASCII: curses would draw other characters as blanks and wait forever for a typed
    ``é`` to make sense, swallowing the keys after it. There, as Python's own C-locale
    coercion does (PEP 538), characters are UTF-8, which is what terminals speak today. In
    any other locale, a character it cannot show is drawn as ``<U+XXXX>``.
    """
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_ALL, "")
    if locale.setlocale(locale.LC_CTYPE) in ("C", "POSIX"):
        for name in ("C.UTF-8", "C.utf8", "UTF-8", "en_US.UTF-8"):
            with contextlib.suppress(locale.Error):
                locale.setlocale(locale.LC_CTYPE, name)
                break
    forget_widths()


def make_parser() -> argparse.ArgumentParser:
    """The command line, its --help, and (word for word, checked by a test) the manual page."""
    import argparse

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

    parser = argparse.ArgumentParser(
        prog=command_name(),
        usage=(
            "%(prog)s [--socket PATH] [USER [TTY]]\n       %(prog)s --list [--socket PATH]\n"
            "       %(prog)s --version"
        ),
        formatter_class=HelpFormatter,
        description=(
            "Chat, line by line, with another person logged into this machine. "
            "Without USER: the first to start talk waits on the shared socket; the second "
            "connects to it. With USER (a login name or uid): a private call between you and "
            "USER, who is told on their terminals how to answer. With USER@HOST: the same "
            "call on HOST, run there through ssh. Type a line and press Enter "
            'to send it; a line with only "." quits.'
        ),
        epilog=(
            "Keys: "
            + "; ".join(f"{row.keys}: {row.does}" for row in KEYS)
            + ". Pasted text is sent as it is, one message per line (a pasted "
            '"." too). When the other side leaves, the conversation stays on the screen until '
            "Esc (or Enter on an empty line) closes it."
        ),
    )
    parser.add_argument(
        "user",
        metavar="USER",
        nargs="?",
        help="call USER privately: only USER can join, and you can only reach USER "
        "(USER@HOST: USER on HOST, through ssh; TALK_SSH names ssh, TALK_REMOTE the command "
        "that runs talk there)",
    )
    parser.add_argument(
        "tty",
        metavar="TTY",
        nargs="?",
        help="with USER, as talk(1) takes it: tell USER on this terminal only (pts/3)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"the UNIX socket to meet on (default: {PATH}, or for a call to USER a path "
        f"in {os.path.dirname(PATH)} made from both uids); pick another to have a "
        "conversation of your own",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print who is waiting to talk to you, and the command that answers each",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class Options(NamedTuple):
    """What the command line asks for."""

    user: str | None = None  # the person to call, if any
    socket: str | None = None  # --socket PATH
    list: bool = False  # --list
    tty: str | None = None  # the terminal of theirs to tell, if only one


#: What a command line that talk cannot take exits with (as argparse's own errors do).
USAGE_ERROR = 2


def parse_args(argv: list[str] | None) -> Options:
    if not (sys.argv[1:] if argv is None else argv):
        # The guide's ``python3 talk.py``: nothing to parse, so no parser is built (nor
        # argparse imported, nor its help made from the key table): start-up is a budget.
        return Options()
    parser = make_parser()

    def error(message: str) -> NoReturn:
        """One line, with the prefix of every other error talk prints."""
        say(f"talk: {printable(message)} (see {parser.prog} --help)\n")
        sys.exit(USAGE_ERROR)

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.list and args.user is not None:
        parser.error("--list takes no USER")
    tty = None if args.tty is None else terminal_name(args.tty)
    if args.tty is not None and tty is None:
        parser.error(f"{args.tty!r} is not the name of a terminal (such as pts/3)")
    return Options(args.user, args.socket, args.list, tty)


def terminal_name(name: str) -> str | None:
    """``pts/3`` for ``pts/3`` or ``/dev/pts/3``, as the login records name terminals; None
    for what cannot be one (it must fit talk(1)'s 16 bytes and stay under /dev)."""
    name = name.removeprefix("/dev/")
    parts = name.split("/")
    fits = 0 < len(name.encode()) < 16 and all(re.fullmatch(r"[\w.-]+", p) for p in parts)
    return name if fits and ".." not in parts and "." not in parts else None


def command_name() -> str:
    """What the user typed to run talk (``talk.py``, ``pubtalk``): the name usage lines give.
    Not ``talk``: on a box with BSD talk, that is another program."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name and name != "-c" else "talk.py"


def main(argv: list[str] | None = None) -> int:
    # The same as at the top, for a talk started through main() (pubtalk): a Ctrl-C before
    # talk's own handlers are in place must not be an exception that can be dropped.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = parse_args(argv)
    use_locale()
    if args.list:
        return list_waiting(args.socket)  # Part II
    crashes: list[dict[str, Any]] = []
    try:
        if args.user is None:
            meeting = Meeting(args.socket or PATH)  # the guide's program
        elif "@" in args.user:
            return call_across(args.user, args.socket, args.tty)  # Part II: on another machine
        else:
            meeting = private_call(args.user, args.socket, args.tty)  # Part II
        check_terminal()
        reason, status = asyncio.run(converse(meeting, crashes))
    except TalkError as e:
        reason, status = str(e), 1
    except KeyboardInterrupt:  # Ctrl-C after talk's own handlers, while asyncio cleans up
        reason, status = "interrupted", 128 + signal.SIGINT
    # The terminal is restored by now (the Display has exited).
    for context in crashes:
        report_crash(context)
    say(f"talk: {printable(reason)}\n")  # names and paths in it are not ours to trust
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


# =============================================================================================
# Part II: whom you talk to
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# 6. A call to one person (talk.py USER)
# ---------------------------------------------------------------------------------------------

#: A private call's socket: write permission for everyone, read for its owner alone.
PRIVATE_MODE = 0o622


class PrivateCall(Meeting):
    """A conversation between you and the person you call (``talk.py USER``), no one else.

    Both sides derive the same short list of meeting places from the two uids, in the same
    order, so a stale socket or a path that someone else squats does not stop them: each
    side skips it and both end up at the same next one. Each side asks the kernel who is at
    the other end (SO_PEERCRED) and talks only to the other. While it waits, it tells the
    person it calls on their terminals, with ``answer``, the command that answers.

    Where a talk daemon answers (7), the call is also one that talk(1) and ytalk understand:
    set-up first looks for an invitation the person left there (they ran ``talk you``), and
    while it waits it leaves one of its own, at a TCP port where the kernel names whoever
    connects, and has the daemon tell the person. Whichever way they come first wins.
    """

    mode = PRIVATE_MODE  # anyone may connect, to be told it is private; --list sees what it is

    def __init__(
        self,
        callee: pwd.struct_passwd,
        me: pwd.struct_passwd,
        base: str,
        answer: str,
        lister: str = "talk.py --list",
        tty: str | None = None,
    ) -> None:
        self.login = callee.pw_name
        self.tty = tty  # the one terminal of theirs to tell, if they said which (talk(1)'s)
        self.uid = callee.pw_uid
        self.me = me.pw_name
        self.places = places_from(base)
        self.answer = answer  # the command that answers, for the notice
        self.lister = lister  # the command that lists the call, where nobody can be told
        self.held_elsewhere: list[Held] = []  # invitations in their name that someone else left

    def admits(self, creds: Credentials | None) -> bool:
        # Not through ssh: then the person is whoever is at the far end, not the callee.
        return creds is not None and creds.uid == self.uid and not forwarding(creds)

    def may_call(self, owner: int) -> bool:
        return owner == self.uid

    def refusal(self) -> str:
        return f"{Refusal.PRIVATE}this conversation is between {self.me} and {self.login}"

    def turned_away(self, peer: Peer) -> str:
        who = f"Waiting for {self.login}"
        return News(
            f"Turned away {peer}; still waiting for {self.login}",
            f"{who}; turned away {peer.name}",
            who,
        )

    def nowhere(self, held: list[Held]) -> TalkError:
        return path_error(f"no free place to meet {self.login}: " + "; ".join(map(str, held)))

    def waiting(self, place: str, held: list[Held]) -> str:
        who = f"Waiting for {self.login}"
        return News(f"{self.waiting_for(held)} on {place}", f"{who} on {place}", who)

    def waiting_for(self, held: list[Held]) -> str:
        """``Waiting for bob``, and which meeting places others hold (`` (talk-1-2.sock is
        held by mallory)``): how the status line starts while a private call waits."""
        return f"Waiting for {self.login}{held_note(held + self.held_elsewhere)}"

    async def call_elsewhere(self, pubpen: PubPen) -> Call | None:
        """The person may have called us with talk(1) first: then the talk daemon holds an
        invitation of theirs, with the address where their talk waits."""
        daemon = TalkDaemon(self.me, self.login)
        try:
            answer = await daemon.ask(LOOK_UP)
        finally:
            daemon.close()
        if answer is None or answer.answer != SUCCESS or answer.address is None:
            return None
        return await answer_invitation(pubpen, self, answer.address)

    async def announce(self, pubpen: PubPen, call: Call, place: str, held: list[Held]) -> None:
        """Tell the person every TELL_EVERY seconds, TELL_TIMES times at most, and show what
        happened on the status line: through the talk daemon where one answers, which also
        lets them answer with talk(1); else through write(1)."""
        invitation = await Invitation.leave(pubpen, self, call)
        notice = f"{self.me} wants to talk. Answer with: {self.answer}\n"
        try:
            for n in range(1, TELL_TIMES + 1):
                if invitation is not None:
                    told = await invitation.announce(self.login, self.lister)
                else:
                    told = await tell(self.login, notice, self.lister, self.tty)
                again = "" if n == 1 else f" (again: {n} of {TELL_TIMES})"
                pubpen.publish("info", self.told(held, told, again))
                await asyncio.sleep(TELL_EVERY)
        finally:
            if invitation is not None:  # they came, or talk ends: nobody may answer it now
                invitation.withdraw()

    def told(self, held: list[Held], told: str, again: str) -> News:
        """The status line while we wait: whom for, whether they were told and how, what
        they can do; then, dropped first where there is no room, which places others hold
        and how many times they were told."""
        who = f"Waiting for {self.login}"
        forms = told.forms if isinstance(told, News) else (told,)
        return News(
            f"{self.waiting_for(held)}: {forms[0]}{again}",
            f"{who}: {forms[0]}{again}",
            *(f"{who}: {form}" for form in forms),
            who,
        )


def meeting_path(directory: str, uid: int, other: int) -> str:
    """Where ``uid`` and ``other`` meet for a private call, whichever of them calls."""
    low, high = sorted((uid, other))
    return os.path.join(directory, f"talk-{low}-{high}.sock")


def find_user(name: str) -> pwd.struct_passwd:
    """The account named ``name``, a login name or a numeric uid."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise TalkError(f"no such user: {printable(name)}") from None


def private_call(name: str, socket_option: str | None, tty: str | None = None) -> PrivateCall:
    """The call to ``name`` (told on ``tty`` only, if given): who, where the two meet, and
    how they answer."""
    callee = find_user(name)
    me = pwd.getpwuid(os.getuid())
    base = socket_option or meeting_path(os.path.dirname(PATH), me.pw_uid, callee.pw_uid)
    answer = answer_command(me.pw_name, socket_option)
    return PrivateCall(callee, me, base, answer, list_command(socket_option), tty)


# ---------------------------------------------------------------------------------------------
# 7. The talk daemon, and talk(1)'s own wire
# ---------------------------------------------------------------------------------------------

#: The talk daemon that talk(1) and ytalk use (``ntalk``, UDP port 518; inetd starts it as
#: nobody.tty, so it may write to terminals). The environment variable names another
#: (``HOST:PORT``, an IPv4 address).
TALK_DAEMON = ("127.0.0.1", 518)
TALK_DAEMON_ENV = "TALK_DAEMON"
#: talkd's messages (``protocols/talkd.h``), in network byte order. A request (CTL_MSG):
#: version, type, answer, pad, id, the TCP address to meet at, the asker's UDP address, pid,
#: the asker's and the other person's names, the other's terminal. An answer (CTL_RESPONSE):
#: version, type, answer, pad, id, an address.
CTL_MSG = struct.Struct("!BBBBI16s16si12s12s16s")
CTL_RESPONSE = struct.Struct("!BBBBI16s")
#: An address in them: 4.3BSD's ``struct sockaddr`` (family first), holding a sockaddr_in.
OSOCKADDR = struct.Struct("!HH4s8x")
TALK_VERSION = 1
LEAVE_INVITE, LOOK_UP, DELETE, ANNOUNCE = range(4)
SUCCESS = 0
#: talkd's answers to an announcement, for the status line, fullest first (NOT_HERE, FAILED;
#: PERMISSION_DENIED, mesg n, says what can be done); any other is given by number.
ANNOUNCE_ANSWERS = {
    1: ("{login} is not logged in", "not logged in"),
    2: ("the talk daemon could not tell {login}", "not told"),
}
PERMISSION_DENIED = 4
#: An id that no invitation has: what talk(1) sends before the daemon gave it one.
NO_ID = 0xFFFFFFFF
#: How long to wait for the daemon's answer, and how often to ask: it is on this machine.
TALKD_WAIT = 0.5
TALKD_TRIES = 3
#: A name in a message: at most this many bytes, NUL included (talk(1) cuts longer ones).
NAME_SIZE = 12
#: Our edit characters on talk(1)'s wire: erase, kill, word erase (DEL, Ctrl-U, Ctrl-W).
#: Our lines go out whole, so the other side never sees us use them.
EDIT_CHARS = b"\x7f\x15\x17"
#: How long connecting to the address in an invitation may take.
CONNECT_TIMEOUT = 3.0
#: The kernel's table of TCP sockets over IPv4, with the uid that owns each.
TCP_TABLE = "/proc/net/tcp"


class Answer(NamedTuple):
    """The talk daemon's answer: SUCCESS or why not, an id, and an address (or None)."""

    answer: int
    id: int
    address: tuple[str, int] | None


def daemon_address() -> tuple[str, int]:
    """Where the talk daemon is asked: TALK_DAEMON, unless the environment names another."""
    host, _, port = os.environ.get(TALK_DAEMON_ENV, "").rpartition(":")
    try:
        socket.inet_aton(host)
        return host, int(port)
    except (OSError, ValueError):
        return TALK_DAEMON


def talkd_name(login: str) -> bytes:
    """A login name as talk(1) puts it in a message: cut to fit, as talk(1) cuts it, so that
    the daemon pairs our requests with theirs."""
    return login.encode("utf-8", "replace")[: NAME_SIZE - 1]


def osockaddr(address: tuple[str, int]) -> bytes:
    return OSOCKADDR.pack(socket.AF_INET, address[1], socket.inet_aton(address[0]))


def address_of(data: bytes) -> tuple[str, int] | None:
    family, port, host = OSOCKADDR.unpack(data)
    return (socket.inet_ntoa(host), port) if family == socket.AF_INET and port else None


class TalkDaemon:
    """The talk daemon, asked as talk(1) asks it, for a call between ``me`` and ``other``.

    Its word is a rendezvous, never an identity: anyone may leave an invitation in any name.
    Who connects is asked of the kernel.
    """

    def __init__(self, me: str, other: str, tty: str | None = None) -> None:
        self.me, self.other = talkd_name(me), talkd_name(other)
        self.tty = (tty or "").encode()  # where to tell them, if on one terminal only
        self.meet_at = ("0.0.0.0", 0)  # where our TCP port waits, for invitations
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):  # no route there: every question goes unanswered
            self.sock.connect(daemon_address())  # only the daemon's answers come back

    async def ask(self, kind: int, id_num: int = NO_ID) -> Answer | None:
        """Send a request and wait for its answer; None if no daemon answers."""
        loop = asyncio.get_running_loop()
        try:
            request = self.request(kind, id_num)
        except OSError:
            return None
        for _ in range(TALKD_TRIES):
            try:
                self.sock.send(request)
                deadline = loop.time() + TALKD_WAIT
                while True:
                    wait = deadline - loop.time()
                    data = await asyncio.wait_for(loop.sock_recv(self.sock, 1024), wait)
                    if len(data) < CTL_RESPONSE.size:
                        continue
                    version, answered, answer, _pad, got_id, where = CTL_RESPONSE.unpack_from(data)
                    if version == TALK_VERSION and answered == kind:
                        return Answer(answer, got_id, address_of(where))
            except asyncio.TimeoutError:
                continue
            except OSError:  # refused: nothing listens at the daemon's port
                return None
        return None

    def request(self, kind: int, id_num: int) -> bytes:
        me = osockaddr(self.sock.getsockname())
        return CTL_MSG.pack(
            TALK_VERSION, kind, 0, 0, id_num, osockaddr(self.meet_at), me, os.getpid(),
            self.me, self.other, self.tty,
        )  # fmt: skip

    def forget(self, ids: Iterable[int]) -> None:
        """Have the daemon delete these invitations, now, without waiting for its answer:
        this runs as talk ends, and must not wait on anyone."""
        for id_num in ids:
            with contextlib.suppress(OSError):
                self.sock.send(self.request(DELETE, id_num))

    def close(self) -> None:
        self.sock.close()


class Invitation:
    """What a waiting private call leaves with the talk daemon: a TCP port on 127.0.0.1,
    where talk(1), ytalk or another talk.py can answer (a Doorkeeper there admits only the
    person called), and an invitation that points at it. announce() has the daemon tell the
    person, as talk(1) does every 30 seconds; withdraw() takes it all back."""

    def __init__(self, daemon: TalkDaemon, server: asyncio.AbstractServer) -> None:
        self.daemon = daemon
        self.server = server
        self.ids: set[int] = set()  # every invitation and announcement the daemon holds
        self.announced = NO_ID

    @classmethod
    async def leave(cls, pubpen: PubPen, call: PrivateCall, waiting: Call) -> Invitation | None:
        """Open the port and leave the invitation; None if no talk daemon answers."""
        daemon = TalkDaemon(call.me, call.login, call.tty)
        try:
            server = await pubpen.loop.create_server(
                partial(Doorkeeper, call, waiting, TalkdProtocol), "127.0.0.1", 0
            )
        except BaseException:
            daemon.close()
            raise
        daemon.meet_at = server.sockets[0].getsockname()[:2]
        invitation = cls(daemon, server)
        try:
            left = await daemon.ask(LEAVE_INVITE)
        except BaseException:
            invitation.withdraw()
            raise
        if left is None:
            invitation.withdraw()
            return None
        invitation.ids.add(left.id)
        return invitation

    async def announce(self, login: str, lister: str) -> str:
        """Renew the invitation and have the daemon tell ``login``; what happened, for the
        status line (``lister``: the command that finds the call all the same)."""
        # The daemon tells the person again only for an announcement with a new id.
        id_num = NO_ID if self.announced == NO_ID else (self.announced + 1) & NO_ID
        left = await self.daemon.ask(LEAVE_INVITE, id_num)
        told = await self.daemon.ask(ANNOUNCE, id_num)
        for answer in (left, told):
            if answer is not None:
                self.ids.add(answer.id)
        if told is None:
            return "the talk daemon stopped answering"
        self.announced = told.id
        if told.answer == SUCCESS:
            return News(
                f"the talk daemon told {login}", f"talkd told {login}", "told by talkd", "told"
            )
        if told.answer == PERMISSION_DENIED:
            return refusing_messages(login, lister)
        why = ANNOUNCE_ANSWERS.get(told.answer, ("the talk daemon said no ({answer})", "not told"))
        return News(*(form.format(login=login, answer=told.answer) for form in why))

    def withdraw(self) -> None:
        """Nobody may answer any more: delete the invitations and close the port (a caller
        already let in keeps talking)."""
        self.daemon.forget(sorted(self.ids))
        self.daemon.close()
        self.server.close()


async def answer_invitation(
    pubpen: PubPen, call: PrivateCall, address: tuple[str, int]
) -> Call | None:
    """Connect to the talk waiting at ``address`` (from an invitation in the callee's name),
    if it is the callee's: the kernel says whose it is. None if it is gone or someone else's.
    """
    loop = pubpen.loop
    where = f"{address[0]}:{address[1]}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            # Binding to the invitation's host fails unless it is an address of this
            # machine: an invitation (anyone may leave one) never sends talk elsewhere.
            sock.bind((address[0], 0))
            await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            sock.close()
            return None  # an invitation its talk left behind
        holder = tcp_owner(sock)
        if not call.admits(holder):
            sock.close()
            name = "someone not known here" if holder is None else user_name(holder.uid)
            call.held_elsewhere.append(Held(where, f"an invitation in their name, {name}'s"))
            return None
        if await turns_us_away(sock):
            # Theirs, but busy with someone else: anyone can leave an invitation in their
            # name that points at any of their ports. Not the call we want; keep waiting.
            sock.close()
            what = "an invitation in their name, to a talk of theirs that turned us away"
            call.held_elsewhere.append(Held(where, what))
            return None
        _transport, protocol = await loop.create_connection(
            partial(TalkdProtocol, pubpen, dialled=where), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    assert isinstance(protocol, TalkdProtocol)
    return Call(protocol)


async def turns_us_away(sock: socket.socket) -> bool:
    """Whether the talk at the other end of ``sock`` (just connected) turns us away: says
    nothing like talk(1) within CONNECT_TIMEOUT (every talk sends its edit characters at
    once), hangs up, or says a Refusal, which comes whole with them. What it said is left
    unread (MSG_PEEK), for the conversation."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await asyncio.wait_for(readable, CONNECT_TIMEOUT)
        said = sock.recv(MAX_LINE_BYTES, socket.MSG_PEEK)
    except (OSError, asyncio.TimeoutError):
        return True
    finally:
        loop.remove_reader(sock.fileno())
    first_line = said[len(EDIT_CHARS) :].partition(b"\n")[0].decode("utf-8", "replace")
    return not said or Refusal.kind(first_line) is not None


def tcp_credentials(transport: asyncio.BaseTransport) -> Credentials | None:
    """Who is at the other end of a TCP connection, if it is on this machine."""
    return tcp_owner(transport.get_extra_info("socket"))


#: The state of an established connection in the kernel's table.
TCP_ESTABLISHED = "01"


def tcp_owner(sock: Any) -> Credentials | None:
    """The owner of the other end of the TCP connection ``sock``, from the kernel's table
    (as ``ss -tne`` shows it), only where the kernel is sure; None if it is not on this
    machine, or not known here. The pid is not in the table: it is 0.

    A caller can hang up before this is asked; what the table then holds for its end is a
    closed socket (time-wait, or a fin-wait no program holds) that names root, and its port
    may already serve someone else. So the answer counts only while our own end is still in
    the table under our socket's inode (the pair of addresses is still ours) and theirs is
    held by a program (an inode; it may have stopped sending, as a refusal does) or is
    established and not yet accepted (no inode yet: its listener's owner is named).
    """
    try:
        ours = (table_address(sock.getsockname()), table_address(sock.getpeername()))
        inode = str(os.fstat(sock.fileno()).st_ino)
    except (AttributeError, OSError):
        return None
    theirs = (ours[1], ours[0])
    still_ours = False
    owners: set[int] = set()
    try:
        with open(TCP_TABLE, encoding="ascii", errors="replace") as table:
            next(table, None)  # the heading
            for row in table:
                # sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode
                fields = row.split()
                if len(fields) < 10:
                    continue
                if (fields[1], fields[2]) == ours and fields[9] == inode:
                    still_ours = True
                elif (fields[1], fields[2]) == theirs and (
                    fields[9] != "0" or fields[3] == TCP_ESTABLISHED
                ):
                    owners.add(int(fields[7]))
    except (OSError, ValueError):
        return None
    if still_ours and len(owners) == 1:
        return Credentials(0, owners.pop())
    return None


def table_address(address: tuple[str, int]) -> str:
    """``0100007F:8222``: an address as the kernel's table writes it (the IPv4 address as a
    32-bit number in this machine's byte order, the port as a number)."""
    (number,) = struct.unpack("=I", socket.inet_aton(address[0]))
    return f"{number:08X}:{address[1]:04X}"


class LiveLine:
    """The line a talk(1) peer is typing, as it types it.

    talk(1) sends every key: characters, its own erase, kill and word erase characters
    (sent first on the wire), and a newline that ends the line. Invalid UTF-8 becomes
    U+FFFD; a line longer than ``max_chars`` is cut there and marked.
    """

    def __init__(self, max_chars: int = MAX_LINE_BYTES) -> None:
        self.max_chars = max_chars
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chars: list[str] = []
        self.cut = False
        self.use_edit_chars(b"\x7f\x15\x17")  # until they say theirs

    def use_edit_chars(self, chars: bytes) -> None:
        """The peer's three edit characters; a byte that is not ASCII edits nothing."""
        self.erase, self.kill, self.word_erase = (chr(c) if c < 0x80 else "" for c in chars)
        keys = "".join(k for k in (self.erase, self.kill, self.word_erase) if k)
        #: What is not simply typed: the edit characters, newline, carriage return.
        self.special = re.compile(f"[\n\r{re.escape(keys)}]")

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def feed(self, data: bytes) -> list[str]:
        """Keys from the peer; return the lines they finished."""
        text = self.decoder.decode(data)
        lines: list[str] = []
        start = 0
        for key in self.special.finditer(text):  # runs of characters are added at once
            self._type(text[start : key.start()])
            self._edit(key.group(), lines)
            start = key.end()
        self._type(text[start:])
        return lines

    def _type(self, run: str) -> None:
        room = self.max_chars - len(self.chars)
        if len(run) > room:
            run = run[: max(0, room)]
            self.cut = True
        self.chars.extend(run)

    def _edit(self, key: str, lines: list[str]) -> None:
        chars = self.chars
        if key == "\n":
            lines.append(self.take())
        elif key == "\r":
            pass  # a terminal's carriage return, before or instead of the newline
        elif key == self.erase:
            if chars:
                chars.pop()
        elif key == self.kill:
            chars.clear()
            self.cut = False
        elif key == self.word_erase:
            while chars and chars[-1] == " ":
                chars.pop()
            while chars and chars[-1] != " ":
                chars.pop()

    def take(self) -> str:
        line = self.text + (CUT_MARK if self.cut else "")
        self.chars = []
        self.cut = False
        return line

    def finish(self) -> str | None:
        """The peer has gone: what it had typed of a line, if anything, as a last line."""
        self._type(self.decoder.decode(b"", final=True))  # half a character: U+FFFD
        return self.take() if self.chars or self.cut else None


class TalkdProtocol(TalkProtocol):
    """talk(1)'s wire, for whoever comes through the talk daemon: each side first sends its
    three edit characters, then every key as it is typed. The peer's line grows on its own
    row (``live``) and joins the conversation when they press Enter; our lines go out whole,
    each ending in a newline. Who is there is asked of the kernel's TCP table."""

    GREETING = EDIT_CHARS
    VIA = "talkd"

    def __init__(self, pubpen: PubPen, *, dialled: str = "") -> None:
        super().__init__(pubpen, dialled=dialled)
        self.edit_chars = b""
        self.typing = LiveLine()

    @staticmethod
    def credentials(transport: asyncio.BaseTransport) -> Credentials | None:
        return tcp_credentials(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.GREETING)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if len(self.edit_chars) < len(EDIT_CHARS):
            need = len(EDIT_CHARS) - len(self.edit_chars)
            self.edit_chars += data[:need]
            data = data[need:]
            if len(self.edit_chars) == len(EDIT_CHARS):
                self.typing.use_edit_chars(self.edit_chars)
        before = self.typing.text
        self.take_lines(self.typing.feed(data))
        if self.typing.text != before:
            self.pubpen.publish("live", self.typing.text)

    def eof_received(self) -> None:
        self.finish_typing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish_typing()
        super().connection_lost(exc)

    def finish_typing(self) -> None:
        """What they had typed of a line is a line: nothing typed is lost."""
        line = self.typing.finish()
        if line is not None:
            self.take_lines([line])
            self.pubpen.publish("live", "")


# ---------------------------------------------------------------------------------------------
# 8. Telling the person without a talk daemon: write(1)
# ---------------------------------------------------------------------------------------------

#: The login records, as who(1) reads them; the environment variable names another file.
UTMP_PATH = "/var/run/utmp"
UTMP_ENV = "TALK_UTMP"
#: glibc's ``struct utmp`` on Linux: type, pid, line, id, user, host, exit, session, time,
#: address, reserved.
UTMP_RECORD = struct.Struct("=hxxi32s4s32s256shhiii4i20x")
USER_PROCESS = 7
#: Tell the person again this often while waiting, at most this many times in all.
TELL_EVERY = 30.0
TELL_TIMES = 10
#: How long one write(1) may take before talk gives up on that terminal.
WRITE_TIMEOUT = 5.0
#: The login records read at most (some 10,000 logins).
MAX_UTMP_BYTES = 4 * 1024 * 1024


def logged_in_terminals(login: str, utmp: str) -> list[str]:
    """The terminals (``pts/3``) where ``login`` is logged in, from the login records."""
    found = [line for user, line in logins(utmp) if user == login]
    return list(dict.fromkeys(found))


def logins(utmp: str) -> list[tuple[str, str]]:
    """Who is logged in on which terminal (``bob``, ``pts/3``), from the login records.

    Only a regular file is read, and opening it never waits: a FIFO or a device named by
    TALK_UTMP would block the loop, and with it the keyboard and Ctrl-C.
    """
    try:
        fd = os.open(utmp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        with open(fd, "rb", closefd=False) as records:
            data = records.read(MAX_UTMP_BYTES)
    except OSError:
        return []
    finally:
        os.close(fd)
    found = []
    size = UTMP_RECORD.size
    for start in range(0, len(data) - size + 1, size):
        fields = UTMP_RECORD.unpack_from(data, start)
        kind, line, user = fields[0], fields[2], fields[4]
        line_name = line.split(b"\0")[0].decode("utf-8", "replace")
        if kind == USER_PROCESS and line_name and ".." not in line_name.split("/"):
            found.append((user.split(b"\0")[0].decode("utf-8", "replace"), line_name))
    return found


def accepts_messages(terminal: str) -> bool:
    """Whether ``mesg y`` is set on ``terminal``: its group may write to it."""
    try:
        return bool(os.stat(f"/dev/{terminal}").st_mode & stat.S_IWGRP)
    except OSError:
        return False


def may_write_to(terminal: str, write: str) -> bool:
    """Whether write(1) at ``write`` can write to ``terminal`` for us: only its owner and
    its group (tty) may. Since the fix for CVE-2024-28085 (Debian 12's bsdextrautils
    2.38.1-5+deb12u1) write(1) is not setgid tty, and an ordinary user is not in that group,
    so it cannot; root can, and so can a write(1) that is still setgid to the group."""
    try:
        group = os.stat(f"/dev/{terminal}").st_gid
        program = os.stat(write)
    except OSError:
        return False
    if os.geteuid() == 0 or group == os.getegid() or group in os.getgroups():
        return True
    return bool(program.st_mode & stat.S_ISGID) and program.st_gid == group


def own_terminal() -> str:
    """The terminal talk runs on (``pts/3``), never one to send a notice to."""
    try:
        return os.ttyname(sys.stdin.fileno()).removeprefix("/dev/")
    except OSError:
        return ""


def talk_command(for_others: bool = True) -> str:
    """The command that runs this talk, for whoever is told how to answer: it must be one
    that is safe for them to run, quoted for their shell (``for_others=False``: the command
    as it is, for you to run elsewhere, as over ssh).

    Run as the installed command (``pubtalk``, a console script), that command: a path into
    a virtual environment or a pipx home means nothing to someone else. Run as ``python3
    talk.py`` (or from a zipapp), that file, but only if nobody but root can change it and
    everyone can read it: a file in the caller's home is the caller's to change (and on
    Debian 12 unreadable to others). Otherwise the command without a path: ``pubtalk`` if
    that is installed where only root can change it, else ``talk.py``.
    """
    import shlex

    if os.path.isfile(__file__) and sys.modules.get("__main__") is sys.modules.get(__name__):
        program = __file__
    elif not os.path.isfile(__file__):  # inside an archive: a zipapp
        program = sys.argv[0]
    else:
        return command_name()
    program = os.path.realpath(program)
    if not for_others or only_root_can_change(program):
        return f"python3 {shlex.quote(program)}"
    installed = shutil.which(INSTALLED_COMMAND)
    if installed is not None and only_root_can_change(os.path.realpath(installed)):
        return INSTALLED_COMMAND
    return "talk.py"


#: The command that pip installs (setup.cfg's console script).
INSTALLED_COMMAND = "pubtalk"


def only_root_can_change(path: str) -> bool:
    """Whether ``path`` (with no symbolic links in it) and every directory above it are
    root's, nobody else may replace any of them, and everyone may read it. A directory that
    others may write to counts only if it is sticky (like /tmp): there only root may rename
    or remove what root owns."""
    shared = stat.S_IWGRP | stat.S_IWOTH
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid != 0 or st.st_mode & shared or not st.st_mode & stat.S_IROTH:
        return False
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return True
        try:
            up = os.stat(parent)
        except OSError:
            return False
        if up.st_uid != 0 or not up.st_mode & stat.S_IXOTH:
            return False
        if up.st_mode & shared and not up.st_mode & stat.S_ISVTX:
            return False
        path = parent


def socket_words(socket_option: str | None) -> str:
    """`` --socket '/the/path'`` for a command someone else types (nothing without a path):
    absolute, since a relative one means another place in their directory, and quoted for
    their shell."""
    import shlex

    if socket_option is None:
        return ""
    return f" --socket {shlex.quote(os.path.abspath(socket_option))}"


def list_command(socket_option: str | None) -> str:
    """What the person called types to list the call (``--list``), quoted for their shell."""
    return f"{talk_command()} --list{socket_words(socket_option)}"


def answer_command(caller: str, socket_option: str | None) -> str:
    """What the person called types to answer ``caller``, quoted for their shell."""
    import shlex

    return f"{talk_command()} {shlex.quote(caller)}{socket_words(socket_option)}"


async def tell(
    login: str, notice: str, lister: str = "talk.py --list", tty: str | None = None
) -> str:
    """Send ``notice`` to each of ``login``'s terminals (only ``tty``, if given) that accepts
    messages, through write(1), where it may write to them; return what happened, for the
    status line (where nobody can be told, that ``lister`` finds the call).

    Nothing write(1) prints can reach talk's screen: its output is read here, and it runs
    in a session of its own, without a controlling terminal.
    """
    terminals = logged_in_terminals(login, os.environ.get(UTMP_ENV, UTMP_PATH))
    mine = own_terminal()
    terminals = [t for t in terminals if t != mine and tty in (None, t)]
    if not terminals:
        where = "" if tty is None else f" on {tty}"
        return News(f"{login} is not logged in{where}", f"not logged in{where}", "not told")
    open_terminals = [t for t in terminals if accepts_messages(t)]
    if not open_terminals:
        return refusing_messages(login, lister)
    write = shutil.which("write")
    finds = f"{login} finds the call with {lister}"
    if write is None:
        why = "no talk daemon answers and write(1) is not installed"
        open_terminals = []
    else:
        open_terminals = [t for t in open_terminals if may_write_to(t, write)]
        why = "no talk daemon answers and write(1) may not write to other terminals here"
    if write is None or not open_terminals:
        not_told = f"{login} was not told"
        return News(f"{why}; {finds}", f"{not_told}; {finds}", not_told, "not told")
    told: list[str] = []
    failed: list[str] = []
    for terminal in open_terminals:
        process = await asyncio.create_subprocess_exec(
            write,
            login,
            terminal,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(process.communicate(notice.encode()), WRITE_TIMEOUT)
        except asyncio.TimeoutError:
            kill_session(process.pid)
            await process.wait()
        except BaseException:  # cancelled: the call was answered, or talk is ending
            kill_session(process.pid)  # a notice must not arrive after that
            raise
        (told if process.returncode == 0 else failed).append(terminal)
    news = []
    if told:
        news.append(f"told {login} on {', '.join(told)}")
    if failed:
        news.append(f"write(1) failed on {', '.join(failed)}")
    return News("; ".join(news), "told" if told else "not told")


def refusing_messages(login: str, lister: str) -> News:
    """``login`` has turned messages off (``mesg n``, as ``login -f`` and many terminals
    start): what they can do about it, and that the call can be found all the same."""
    finds = f"{login} finds the call with {lister}"
    return News(
        f"{login} is refusing messages (mesg n): mesg y lets them be told; {finds}",
        f"{login} is refusing messages; {finds}",
        f"{login} is refusing messages",
        "refusing messages",
    )


def kill_session(leader: int) -> None:
    """Kill write(1), and anything it started, wherever they are blocked (a stopped
    terminal): they run in a session of their own, whose id is write(1)'s pid."""
    with contextlib.suppress(OSError):
        os.killpg(leader, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# 9. Who is waiting to talk to you (--list)
# ---------------------------------------------------------------------------------------------


def listener_at(path: str, live: SocketFiles | None) -> os.stat_result | None:
    """The socket file at ``path`` if some process listens on it (if we cannot tell, any)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or not is_listening(st, live):
        return None  # stale
    return st


def list_waiting(socket_option: str | None) -> int:
    """Print who is waiting to talk to you, with the command that answers each (quoted for
    the shell: a name or a path may hold spaces or ``;``); exit 0."""
    import shlex

    me = os.getuid()
    shared = socket_option or PATH
    directory = os.path.dirname(os.path.abspath(shared))
    here = talk_command()
    live = listening_files()
    lines = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for name in names:
        match = re.fullmatch(r"talk-(\d+)-(\d+)\.sock(?:\.\d+)?", name)
        if match is None:
            continue
        low, high = int(match[1]), int(match[2])
        if me not in (low, high):
            continue
        st = listener_at(os.path.join(directory, name), live)
        if st is None or st.st_uid not in (low, high) or (st.st_uid == me and low != high):
            continue  # stale, a squatter's, or your own call to someone else
        caller = printable(user_name(st.st_uid))
        base = meeting_path(directory, low, high)
        option = "" if directory == os.path.dirname(PATH) else socket_words(base)
        lines.append(f"{caller} is waiting to talk to you: {here} {shlex.quote(caller)}{option}")
    listed = {line.partition(" ")[0] for line in lines}
    lines += invited_by(set(map(printable, waiting_at_the_daemon())) - listed, here)
    option = socket_words(socket_option)
    for place in places_from(shared):
        st = listener_at(place, live)
        if st is None or st.st_uid == me:
            continue
        who = printable(user_name(st.st_uid))
        if stat.S_IMODE(st.st_mode) == PRIVATE_MODE:
            lines.append(
                f"{who} is waiting on {place} for a private call, only for the person called: "
                f"{here} {shlex.quote(who)}{option}"
            )
        else:
            lines.append(f"{who} is waiting for anyone on {place}: {here}{option}")
    if live is None and lines:
        lines.append("(talk cannot tell here whether these are still there or left over)")
    print("\n".join(lines) if lines else "Nobody is waiting to talk to you.")
    return 0


def waiting_at_the_daemon() -> list[str]:
    """Who has left an invitation for you with the talk daemon (they ran ``talk you``, ytalk
    or ``talk.py you``). The daemon lists nothing: each person logged in is looked up, as
    their talk(1) would look them up. Its word, not the kernel's: the command that answers
    asks the kernel whose the invitation's port is."""
    me = pwd.getpwuid(os.getuid()).pw_name
    others = sorted({user for user, _ in logins(os.environ.get(UTMP_ENV, UTMP_PATH))} - {me})

    async def look_up_all() -> list[Answer | None]:
        daemons = [TalkDaemon(me, other) for other in others]
        try:
            return await asyncio.gather(*(daemon.ask(LOOK_UP) for daemon in daemons))
        finally:
            for daemon in daemons:
                daemon.close()

    answers = asyncio.run(look_up_all()) if others else []
    return [
        other
        for other, answer in zip(others, answers)
        if answer is not None and answer.answer == SUCCESS and answer.address is not None
    ]


def invited_by(callers: Iterable[str], here: str) -> list[str]:
    """The lines of --list for invitations left with the talk daemon by ``callers``."""
    import shlex

    return [
        f"{caller} is waiting to talk to you, says the talk daemon (talk(1) or ytalk): "
        f"{here} {shlex.quote(caller)}"
        for caller in sorted(callers)
    ]


# ---------------------------------------------------------------------------------------------
# 10. Across machines: talk.py USER@HOST, over OpenSSH
# ---------------------------------------------------------------------------------------------

#: The ssh program (a command line: ``ssh -F ~/.ssh/other``), and the command that runs talk
#: on the other machine, if not this talk's own.
SSH_ENV = "TALK_SSH"
REMOTE_ENV = "TALK_REMOTE"
#: How the far side says why it did not run talk: not found there, or too old to take a call.
REMOTE_MISSING, REMOTE_TOO_OLD = 97, 98
#: What ssh exits with when it cannot connect or authenticate.
SSH_FAILED = 255
#: Run by the user's shell on the other machine: check that talk is there and new enough
#: (every talk that knows --version takes a call to USER), then become it.
REMOTE_SCRIPT = (
    'out=$({talk} --version 2>&1) || {{ status=$?; case "$status:$out" in '
    '126:*|127:*|*"No such file"*|*"can\'t open file"*) exit {missing};; esac; '
    "exit {old}; }}; exec {talk} {arguments}"
)


def call_across(who: str, socket_option: str | None, tty: str | None = None) -> int:
    """``talk.py bob@host``: run the call on ``host``, through ssh (the user's own ssh, with
    their configuration, keys, agent and known hosts): there it is a private call to bob,
    so both names come from that machine's kernel, and the caller is whoever ssh logged in.
    Returns the far talk's exit status; what went wrong before it ran is a TalkError."""
    import shlex
    import subprocess

    login, _, host = who.rpartition("@")
    if not login or not host:
        raise TalkError(f"{printable(who)}: a person on another machine is USER@HOST")
    ssh = shlex.split(os.environ.get(SSH_ENV) or "ssh")
    talk = os.environ.get(REMOTE_ENV) or talk_command(for_others=False)
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())):
        raise TalkError("a call to another machine needs a terminal")
    command = remote_command(talk, login, socket_option, tty)
    try:
        process = subprocess.Popen([*ssh, "-t", "--", host, command], stderr=subprocess.PIPE)
    except OSError as e:
        why = f"cannot run {ssh[0]} ({e.strerror}); {SSH_ENV} names the ssh program"
        raise TalkError(why) from None
    # ssh has the terminal now (in raw mode: Ctrl-C is a key for the far talk); talk only
    # waits, and passes on a signal that should end the call.
    previous = {signum: signal.getsignal(signum) for signum in ENDING_SIGNALS}
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: process.send_signal(number))
    try:
        pass_on_words(process)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if process.returncode < 0:  # ssh ended by a signal (Ctrl-C at its prompts): so does talk
        number = -process.returncode
        why = ENDING_SIGNALS.get(number, f"ssh ended by signal {number}")
        say(f"\ntalk: {why}\n")  # ssh may have left the cursor after its question
        return 128 + number
    if process.returncode == SSH_FAILED:  # and it has said why, just above
        raise TalkError(f"ssh could not reach {host}")
    if process.returncode == REMOTE_MISSING:
        raise TalkError(f"{talk} is not found on {host}; {REMOTE_ENV} names the command there")
    if process.returncode == REMOTE_TOO_OLD:
        raise TalkError(
            f"the talk on {host} ({talk}) is too old to take a call from another machine; "
            f"{REMOTE_ENV} names another command there"
        )
    return process.returncode


def remote_command(talk: str, login: str, socket_option: str | None, tty: str | None = None) -> str:
    """What ssh has the other machine run: ``talk`` (a command line for sh there) calling
    ``login`` (on ``tty`` there, if given), at the same ``--socket`` if one was given,
    whatever the login shell there."""
    import shlex

    # One word whatever the path: "--socket=-x" is not taken for an option there.
    arguments = [login] + ([] if tty is None else [tty])
    arguments += [] if socket_option is None else [f"--socket={socket_option}"]
    script = REMOTE_SCRIPT.format(
        talk=talk, arguments=shlex.join(arguments), missing=REMOTE_MISSING, old=REMOTE_TOO_OLD
    )
    return for_any_shell(script)


def for_any_shell(script: str) -> str:
    """``script`` (sh) as a command that any login shell runs as sh would: sshd hands the
    command to the user's login shell, and csh, tcsh and fish each quote differently from sh.
    Inside single quotes, all of them keep everything but a quote, a backslash before a quote
    or a backslash, ``!`` and a newline as it is; so the script travels there as octal escapes
    (``\\0NNN``), which sh's printf turns back into the script."""
    escaped = "".join(f"\\0{byte:o}" for byte in script.encode())
    return f'exec sh -c \'eval "$(printf %b "{escaped}")"\''


def pass_on_words(process: subprocess.Popen[bytes]) -> None:
    """Show what ssh says on its standard error as it says it (a host key it adds, why it
    could not connect), but for its closing "Connection to HOST closed.", and wait for ssh
    to end."""
    import threading

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line and not re.fullmatch(r"Connection to \S+ closed\.", line):
                with contextlib.suppress(OSError, ValueError):
                    os.write(sys.stderr.fileno(), raw)

    # A daemon: an ssh it started in the background (-f, a control master) may keep the
    # pipe open long after it ended.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process.wait()
    reader.join(HANGUP_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
