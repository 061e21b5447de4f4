"""Sending to a side that does not take what is sent (issue 7, section 4), at unit level.

Lines typed before anyone connects, and lines for a peer that stopped reading, wait in a
bounded backlog: once it is full a line is dropped and an ``error`` event says which. Nothing
waits: the loop (and so the keyboard) keeps running. test_e2e_screen.py checks the same through
the real program: the note on the status line, the keyboard, and ``.``.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import talk
from pubmarine import PubPen

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
    theirs.close()


@pytest.mark.asyncio
async def test_a_peer_that_never_reads_gets_a_bounded_backlog() -> None:
    pubpen, errors = pubpen_with_errors()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    transport, _protocol = await pubpen.loop.create_connection(
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
    theirs.close()
