"""Unit tests of the talkd route's own logic: talk(1)'s wire (the line a peer types, as it
types it), the kernel's TCP table, the daemon's message layout, and the commands a notice
names. The route against the real daemon and BSD talk is in test_e2e_talkd.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from terminal import DEADLINE, LOGIN, wait_until

import talk
from pubmarine import PubPen

# -- the line a talk(1) peer types ------------------------------------------------------------


def test_a_peers_keys_make_its_line_and_newline_ends_it() -> None:
    line = talk.LiveLine()
    assert line.feed(b"hi ali") == [] and line.text == "hi ali"
    assert line.feed(b"cx\x7fe\nnext") == ["hi alice"]
    assert line.text == "next"


def test_the_peers_own_edit_characters_are_honoured() -> None:
    line = talk.LiveLine()
    line.use_edit_chars(b"\x08\x18\x02")  # Ctrl-H, Ctrl-X, Ctrl-B: what this peer uses
    assert line.feed(b"abc\x08") == [] and line.text == "ab"
    assert line.feed(b"\x7f") == [] and line.text == "ab\x7f"  # DEL is just a character now
    line.feed(b"\x18")
    assert line.text == ""
    line.feed(b"one two  \x02")
    assert line.text == "one "
    line.feed(b"\x02\x02")
    assert line.text == ""


def test_kill_and_word_erase_with_the_usual_characters() -> None:
    line = talk.LiveLine()
    assert line.feed(b"first second\x17\x17third\n") == ["third"]
    assert line.feed(b"gone\x15kept\n") == ["kept"]


def test_utf8_split_across_pieces_and_erased_as_one_character() -> None:
    line = talk.LiveLine()
    data = "né€".encode()
    for byte in data:
        line.feed(bytes([byte]))
    assert line.text == "né€"
    line.feed(b"\x7f")
    assert line.text == "né"
    assert line.feed(b"\xff\n") == ["né\ufffd"]


def test_a_line_without_end_is_bounded_and_marked() -> None:
    line = talk.LiveLine(max_chars=10)
    line.feed(b"x" * 100_000)
    assert len(line.text) == 10
    assert line.feed(b"\n") == ["x" * 10 + talk.CUT_MARK]


def test_what_was_typed_when_the_peer_left_is_a_last_line() -> None:
    line = talk.LiveLine()
    line.feed(b"unfinished \xc3")  # half a character, too
    assert line.finish() == "unfinished \ufffd"
    assert talk.LiveLine().finish() is None


def test_a_peer_that_is_not_ascii_in_its_edit_characters_edits_nothing() -> None:
    line = talk.LiveLine()
    line.use_edit_chars(b"\xfe\xff\x80")
    line.feed(b"ab\x7f")
    assert line.text == "ab\x7f"


# -- the wire: what a talk(1) peer sends, as the conversation sees it ------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.mark.asyncio
async def test_a_talk1_peer_is_greeted_and_its_lines_arrive_whole() -> None:
    pubpen = PubPen(asyncio.get_running_loop(), talk.EVENTS)
    seen: list[tuple[str, Any]] = []
    pubpen.subscribe("incoming", lambda text, who: seen.append(("incoming", (text, who))))
    pubpen.subscribe("live", lambda text: seen.append(("live", text)))
    protocol = talk.TalkdProtocol(pubpen)
    transport = FakeTransport()
    protocol.connection_made(transport)
    assert bytes(transport.written) == talk.EDIT_CHARS  # our edit characters go out first
    protocol.data_received(b"\x08\x15")  # their edit characters, in two pieces
    protocol.data_received(b"\x17hi\x08o")
    # A peer cannot forge our lines: what it sends is its line, shown as theirs.
    protocol.data_received(b"\n\x1b[1m<myself> fake\n")
    pubpen.publish("outgoing", "my line")
    await pubpen.drain()
    assert ("incoming", ("ho", talk.YOU)) in seen
    assert ("incoming", ("\x1b[1m<myself> fake", talk.YOU)) in seen
    # One update of the growing line per piece that arrived; cleared once the line is done.
    assert [text for kind, text in seen if kind == "live"] == ["ho", ""]
    assert bytes(transport.written).endswith(b"my line\n")


# -- the kernel's TCP table ---------------------------------------------------------------------


def needs_tcp_table() -> None:
    if not os.path.exists(talk.TCP_TABLE):
        pytest.skip(f"{talk.TCP_TABLE} is missing (not Linux)")


def test_the_kernels_tcp_table_names_the_owner_of_the_other_end() -> None:
    needs_tcp_table()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            for end in (accepted, client):
                owner = talk.tcp_owner(end)
                assert owner is not None and owner.uid == os.getuid()


def test_a_call_not_yet_accepted_names_the_owner_of_the_listener() -> None:
    needs_tcp_table()
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        owner = talk.tcp_owner(client)
        assert owner is not None and owner.uid == os.getuid()


def state_of(local: tuple[str, int], remote: tuple[str, int]) -> str | None:
    """The state of the connection from ``local`` to ``remote`` in the kernel's table."""
    wanted = (talk.table_address(local), talk.table_address(remote))
    with open(talk.TCP_TABLE) as table:
        for row in table:
            fields = row.split()
            if (fields[1], fields[2]) == wanted:
                return fields[3]
    return None


def test_a_caller_that_has_hung_up_names_nobody() -> None:
    """Its end of the connection is then closed (fin-wait, time-wait): the table names uid 0
    for it, which is not who called."""
    needs_tcp_table()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        ends = (client.getsockname(), accepted.getsockname())
        client.close()
        with accepted:
            wait_until(lambda: state_of(*ends) != talk.TCP_ESTABLISHED, DEADLINE, "the hang-up")
            assert talk.tcp_owner(accepted) is None


def test_a_peer_that_has_stopped_sending_is_still_named() -> None:
    """A talk that refuses a caller says its line and shuts down its sending side at once:
    still its owner's socket, whatever state the table gives it."""
    needs_tcp_table()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        ends = (accepted.getsockname(), client.getsockname())
        with client, accepted:
            accepted.shutdown(socket.SHUT_WR)
            wait_until(lambda: state_of(*ends) != talk.TCP_ESTABLISHED, DEADLINE, "the shutdown")
            owner = talk.tcp_owner(client)
            assert owner is not None and owner.uid == os.getuid()


def test_a_socket_that_is_not_connected_names_nobody() -> None:
    with socket.socket() as sock:
        assert talk.tcp_owner(sock) is None


def test_addresses_are_written_as_talkd_reads_them() -> None:
    data = talk.osockaddr(("127.0.0.1", 40000))
    assert len(data) == 16
    assert data[:4] == b"\x00\x02\x9c\x40"  # AF_INET and the port, in network byte order
    assert talk.address_of(data) == ("127.0.0.1", 40000)
    assert talk.address_of(b"\x00" * 16) is None
    assert talk.CTL_MSG.size == 84 and talk.CTL_RESPONSE.size == 24  # protocols/talkd.h


def test_names_are_cut_as_talk1_cuts_them() -> None:
    assert talk.talkd_name("a-very-long-login") == b"a-very-long"
    assert len(talk.talkd_name("é" * 20)) == talk.NAME_SIZE - 1


@pytest.mark.asyncio
async def test_no_daemon_is_a_quick_none(monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = talk.TalkDaemon(LOGIN, LOGIN)
    try:
        answer = await asyncio.wait_for(daemon.ask(talk.LOOK_UP), 5)
    finally:
        daemon.close()
    assert answer is None


# -- the login records, and the commands a notice names -------------------------------------


def test_login_records_that_are_a_fifo_do_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "utmp"
    os.mkfifo(fifo)
    found: list[list[str]] = []
    reader = threading.Thread(
        target=lambda: found.append(talk.logged_in_terminals("bob", str(fifo))), daemon=True
    )
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock it before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading login records that are a FIFO blocked")
    assert found == [[]]


@pytest.fixture
def as_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """talk_command() as if talk.py had been run as ``python3 talk.py``."""
    monkeypatch.setitem(sys.modules, "__main__", talk)
    yield


def test_a_talk_py_only_root_can_change_is_named_by_its_path(
    as_file: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(talk, "only_root_can_change", lambda path: True)
    assert talk.talk_command() == f"python3 {os.path.realpath(talk.__file__)}"


def test_a_talk_py_its_owner_could_change_is_not_named_by_its_path(
    as_file: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(talk, "only_root_can_change", lambda path: False)
    assert talk.talk_command() == "talk.py"


def test_a_file_in_a_directory_someone_else_may_change_is_not_roots_alone(
    tmp_path: Path,
) -> None:
    program = tmp_path / "talk.py"
    program.write_text("")
    program.chmod(0o644)
    assert not talk.only_root_can_change(str(program))  # pytest's own, or not searchable
    assert talk.only_root_can_change(os.path.realpath("/bin/sh")) == (
        os.stat(os.path.realpath("/bin/sh")).st_uid == 0
        and not os.stat("/bin").st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def test_the_answer_is_quoted_for_the_shell_and_its_socket_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(talk, "talk_command", lambda: "talk.py")
    monkeypatch.chdir(tmp_path)
    command = talk.answer_command("a b;rm -rf x", "my dir/s.sock")
    assert command == f"talk.py 'a b;rm -rf x' --socket '{tmp_path}/my dir/s.sock'"
    assert talk.list_command("s.sock") == f"talk.py --list --socket {tmp_path}/s.sock"
