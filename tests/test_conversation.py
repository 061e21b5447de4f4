"""Unit tests of the conversation: framing the byte stream into lines (LineDecoder), the
history and reading back through it, and TalkProtocol's news and sending, on real socket
pairs without a terminal.

Lines typed before anyone connects, and lines for a peer that stopped reading, wait in a
bounded backlog: once it is full a line is dropped and an ``error`` event says which. Nothing
waits: the loop (and so the keyboard) keeps running. test_e2e_conversation.py checks the same
through the real program.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest
from terminal import DEADLINE, LOGIN

import talk
from pubmarine import PubPen
from talk import (
    CUT_MARK,
    MYSELF,
    YOU,
    History,
    LineDecoder,
)

# -- framing the byte stream into lines: LineDecoder -------------------------------------------


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


# -- the history, and reading back through it --------------------------------------------------


def rows_of(history: History) -> list[str]:
    """The rows of the conversation area, without who said each."""
    return [row for _who, row in history.window()]


def history_of(n: int, height: int = 5, label: str = "msg ") -> History:
    """A History of ``n`` messages from ``<you>`` (``msg 0``, ...), 40 columns wide."""
    history = History()
    history.resize(40, height)
    for i in range(n):
        history.add("<you>", f"{label}{i}")
    return history


def test_history_shows_the_newest_rows_at_the_bottom() -> None:
    history = History()
    for i in range(30):
        history.add(YOU, f"line {i}")
    history.resize(40, 10)
    rows = rows_of(history)
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
    assert rows_of(history)[-1].endswith("x")


def test_page_up_and_down_move_through_history_and_stop_at_the_ends() -> None:
    history = history_of(30, height=10, label="")
    history.page_up()
    assert rows_of(history)[-1] == f"{YOU} 20"
    for _ in range(10):
        history.page_up()
    assert rows_of(history)[0] == f"{YOU} 0"
    assert history.scroll == 20, "PageUp went further back than the oldest row"
    for _ in range(10):
        history.page_down()
    assert rows_of(history)[-1] == f"{YOU} 29"
    assert history.scroll == 0


def test_reading_back_is_not_disturbed_by_new_messages() -> None:
    history = history_of(30, height=10, label="")
    history.page_up()
    before = rows_of(history)
    history.add(MYSELF, "new")
    assert rows_of(history) == before


def test_messages_arriving_while_scrolled_back_are_counted_and_the_view_stays() -> None:
    history = history_of(20)
    history.page_up()
    view = rows_of(history)
    for i in range(3):
        history.add("<you>", f"new {i}")
    assert history.unseen == 3 and rows_of(history) == view


def test_nothing_is_counted_while_at_the_newest() -> None:
    history = history_of(20)
    history.add("<you>", "new")
    assert history.unseen == 0 and rows_of(history)[-1] == "<you> new"


def test_paging_down_counts_down_what_is_still_below() -> None:
    history = history_of(20)  # pages of 4 rows, 5 rows shown
    history.page_up()
    history.page_up()
    for i in range(6):
        history.add("<you>", f"new {i}")
    assert history.unseen == 6
    history.page_down()
    history.page_down()  # back where the newest was: all 6 still below
    assert history.unseen == 6 and rows_of(history)[-1] == "<you> msg 19"
    history.page_down()
    assert history.unseen == 2 and rows_of(history)[-1] == "<you> new 3"
    history.page_up()  # what was seen stays seen
    assert history.unseen == 2
    history.newest()
    assert history.unseen == 0 and history.scroll == 0 and rows_of(history)[-1] == "<you> new 5"


def test_newest_is_one_step_back_after_a_flood() -> None:
    history = history_of(20)
    history.page_up()
    for i in range(3000):
        history.add("<you>", f"flood {i}")
    assert history.unseen == 3000
    history.newest()
    assert rows_of(history)[-1] == "<you> flood 2999"


def test_the_count_stays_right_when_the_oldest_messages_are_dropped() -> None:
    history = History(limit=10)
    history.resize(40, 5)
    for i in range(10):
        history.add("<you>", f"msg {i}")
    history.page_up()
    history.page_up()  # at the oldest
    assert rows_of(history)[0] == "<you> msg 0"
    for i in range(3):
        history.add("<you>", f"new {i}")
    assert rows_of(history)[0] == "<you> msg 3"  # the view had to move with the oldest
    assert history.unseen == 3
    history.page_down()  # 4 rows down: new 0 and new 1 come into view
    assert history.unseen == 1 and rows_of(history)[-1] == "<you> new 1"
    history.page_down()
    assert history.unseen == 0 and rows_of(history)[-1] == "<you> new 2"


# -- TalkProtocol: lines in, events out --------------------------------------------------------


async def _connected_pair(pubpen: PubPen, **kwargs: str) -> tuple[talk.TalkProtocol, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    _transport, protocol = await pubpen.loop.create_connection(
        lambda: talk.TalkProtocol(pubpen, **kwargs), sock=ours
    )
    assert isinstance(protocol, talk.TalkProtocol)
    return protocol, theirs


async def hang_up(protocol: talk.TalkProtocol, theirs: socket.socket) -> None:
    """The peer hangs up; wait until our end has seen it, so that no transport is left open."""
    theirs.close()
    await asyncio.wait_for(protocol.closed, DEADLINE)


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
    protocol, theirs = await _connected_pair(pubpen)
    pubpen.publish("outgoing", "héllo")
    pubpen.publish("outgoing", "second")
    assert await _recv_until(theirs, 2) == "héllo\nsecond\n".encode()
    await hang_up(protocol, theirs)


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
    await hang_up(protocol, theirs)


@pytest.mark.asyncio
async def test_connecting_publishes_who_is_at_the_other_end() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    peers: list[talk.Peer] = []
    pubpen.subscribe("joined", lambda peer, called_us: peers.append(peer))
    protocol, theirs = await _connected_pair(pubpen)
    await pubpen.drain()
    # The kernel's word, not the peer's: the login and pid of the process at the other end.
    assert peers == [ME] and str(peers[0]) == f"{LOGIN} (pid {os.getpid()})"
    await hang_up(protocol, theirs)


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
    theirs.sendall(talk.Refusal.BUSY.encode() + b"\n")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    if caller:
        assert len(quits) == 1 and shown == []
        # What the program at the path says, and whose it is: not talk's own verdict.
        assert quits[0] == (
            f"the program at /some/path ({LOGIN}'s) says it is busy: someone is already "
            "talking on this socket; use --socket PATH to start another conversation",
            1,
        )
    else:
        assert quits == [] and shown == [talk.Refusal.BUSY]


@pytest.mark.asyncio
async def test_a_busy_notice_after_the_first_line_is_only_a_line() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    quits: list[tuple[str, int]] = []
    shown: list[str] = []
    pubpen.subscribe("quit", lambda reason, status: quits.append((reason, status)))
    pubpen.subscribe("incoming", lambda text, who: shown.append(text))
    protocol, theirs = await _connected_pair(pubpen, dialled="/some/path")
    theirs.sendall(b"hello\n" + talk.Refusal.BUSY.encode() + b"\n")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert quits == [] and shown == ["hello", talk.Refusal.BUSY]


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
    await hang_up(protocol, theirs)


@pytest.mark.asyncio
async def test_a_peer_that_hangs_up_ends_the_conversation_with_status_0() -> None:
    pubpen = PubPen(asyncio.get_running_loop())
    errors, lost = _record_endings(pubpen)
    protocol, theirs = await _connected_pair(pubpen)
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert errors == [] and lost == [("the other side closed the connection", 0)]


#: Who the protocol names at the other end of a socket pair: this very process.
ME = talk.Peer(LOGIN, os.getpid())


@pytest.mark.asyncio
@pytest.mark.parametrize("dialled", ["", "/some/path"], ids=["waited", "called"])
async def test_joined_names_the_peer_and_whether_it_called_us(dialled: str) -> None:
    """Both sides hear who is there; only the side that waited was called (its bell rings)."""
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    joined: list[tuple[talk.Peer, bool]] = []
    pubpen.subscribe("joined", lambda peer, called_us: joined.append((peer, called_us)))
    protocol, theirs = await _connected_pair(pubpen, dialled=dialled)
    await pubpen.drain()
    assert joined == [(ME, not dialled)]
    await hang_up(protocol, theirs)


@pytest.mark.asyncio
async def test_the_news_of_a_conversation_says_who_came_then_that_it_ended() -> None:
    """Records, not sentences: the Display words them (``alice (pid 10294) left``)."""
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    news: list[object] = []
    pubpen.subscribe("info", lambda message: news.append(("info", message)))
    pubpen.subscribe("joined", lambda peer, called_us: news.append(("joined", peer)))
    pubpen.subscribe("conn_lost", lambda reason, status: news.append((reason, status)))
    protocol, theirs = await _connected_pair(pubpen)
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert news == [("joined", ME), ("the other side closed the connection", 0)]


# -- sending to a side that does not take it: a bounded backlog --------------------------------


LINE = 1000  # bytes per line on the wire, newline included


def numbered(n: int) -> str:
    return f"{n:05d} " + "y" * (LINE - 7)


async def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    data = b""
    while data.count(b"\n") < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
        assert chunk, "connection closed early"
        data += chunk
    return data.splitlines(keepends=True)


def pubpen_with_errors() -> tuple[PubPen, list[str]]:
    pubpen = PubPen(asyncio.get_running_loop())
    errors: list[str] = []
    pubpen.subscribe("error", errors.append)
    return pubpen, errors


@pytest.mark.asyncio
async def test_lines_typed_before_anyone_connects_are_bounded_and_the_first_kept() -> None:
    pubpen, errors = pubpen_with_errors()
    protocol = talk.TalkProtocol(pubpen)
    for n in range(1000):  # 1 MB typed while nobody is there
        pubpen.publish("outgoing", numbered(n))
    await pubpen.drain()

    kept = 1000 - len(errors)
    assert errors, "no line was refused: the backlog is unbounded"
    assert kept <= 300, f"{kept} KB kept for nobody"
    assert errors[0].startswith(f"not sent (nobody is connected): {numbered(kept)[:5]}")

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    await pubpen.loop.create_connection(lambda: protocol, sock=ours)
    lines = await read_lines(theirs, kept)
    assert [int(line[:5]) for line in lines] == list(range(kept)), "not the first, in order"
    await hang_up(protocol, theirs)


@pytest.mark.asyncio
async def test_a_peer_that_never_reads_gets_a_bounded_backlog() -> None:
    pubpen, errors = pubpen_with_errors()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    transport, protocol = await pubpen.loop.create_connection(
        lambda: talk.TalkProtocol(pubpen), sock=ours
    )
    for n in range(3000):  # 3 MB for a peer that reads nothing
        pubpen.publish("outgoing", numbered(n))
    await pubpen.drain()

    assert transport.get_write_buffer_size() <= 64 * 1024 + LINE, "asyncio's buffer grew"
    assert errors, "no line was refused: the backlog is unbounded"
    assert all(error.startswith("not sent (they are not reading): ") for error in errors)
    kept = 3000 - len(errors)
    assert kept < 1000, f"{kept} KB kept for a peer that does not read"

    # Once the peer reads, what was kept arrives whole and in order, and what is sent after.
    lines = await read_lines(theirs, kept)
    assert [int(line[:5]) for line in lines] == list(range(kept))
    assert all(len(line) == LINE for line in lines)
    pubpen.publish("outgoing", "after the backlog")
    assert await read_lines(theirs, 1) == [b"after the backlog\n"]
    await hang_up(protocol, theirs)


@pytest.mark.asyncio
async def test_no_turn_of_the_loop_takes_more_than_a_share_of_a_flood() -> None:
    """Keys are read once in every turn of the event loop: a flood of lines is published a
    share at a time, so that a key typed meanwhile never waits behind all of it; and every
    line still arrives, in order."""
    loop = asyncio.get_running_loop()
    pubpen = PubPen(loop)
    seen: list[str] = []
    pubpen.subscribe("incoming", lambda text, who: seen.append(text))
    protocol, theirs = await _connected_pair(pubpen)
    per_turn: list[int] = []
    counted = [0]

    def tick() -> None:  # once a turn: how many lines arrived since the last
        per_turn.append(len(seen) - counted[0])
        counted[0] = len(seen)
        if not protocol.closed.done():
            loop.call_soon(tick)

    tick()
    flood = b"".join(b"line %d\n" % n for n in range(20_000))
    theirs.setblocking(True)

    def send() -> None:
        with theirs:
            theirs.sendall(flood)

    sender = threading.Thread(target=send)
    sender.start()
    await asyncio.wait_for(protocol.closed, DEADLINE)
    sender.join()
    await pubpen.drain()
    assert seen == [f"line {n}" for n in range(20_000)]
    assert max(per_turn) <= talk.LINES_PER_TURN, max(per_turn)
