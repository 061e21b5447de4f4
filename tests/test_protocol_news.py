"""Unit tests of the news TalkProtocol gives for issue 8: who left, and that someone joined."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket

import pytest

import talk
from pubmarine import PubPen

WHO = f"{pwd.getpwuid(os.getuid()).pw_name} (pid {os.getpid()})"


async def connected(pubpen: PubPen, dialled: str) -> tuple[talk.TalkProtocol, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    _transport, protocol = await pubpen.loop.create_connection(
        lambda: talk.TalkProtocol(pubpen, dialled=dialled), sock=ours
    )
    assert isinstance(protocol, talk.TalkProtocol)
    return protocol, theirs


@pytest.mark.asyncio
@pytest.mark.parametrize("dialled", ["", "/some/path"], ids=["waited", "called"])
async def test_only_the_side_that_waited_hears_that_someone_joined(dialled: str) -> None:
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    joined: list[str] = []
    pubpen.subscribe("joined", joined.append)
    _protocol, theirs = await connected(pubpen, dialled)
    await pubpen.drain()
    assert joined == ([] if dialled else [WHO])
    theirs.close()


@pytest.mark.asyncio
async def test_the_status_line_hears_who_left_before_the_conversation_ends() -> None:
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    news: list[object] = []
    pubpen.subscribe("info", lambda message: news.append(message))
    pubpen.subscribe("conn_lost", lambda reason, status: news.append((reason, status)))
    protocol, theirs = await connected(pubpen, "")
    theirs.close()
    await asyncio.wait_for(protocol.closed, 5)
    await pubpen.drain()
    assert news == [
        f"Talking to {WHO}",
        f"{WHO} left",
        ("the other side closed the connection", 0),
    ]
