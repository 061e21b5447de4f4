"""Login records for tests, in the format talk.py and who(1) read (``TALK_UTMP`` names the file)."""

from __future__ import annotations

import os
import struct
import time

#: glibc's struct utmp on Linux, as talk.py and who(1) read it.
UTMP_RECORD = struct.Struct("=hxxi32s4s32s256shhiii4i20x")
USER_PROCESS = 7


def utmp_record(login: str, line: str, kind: int = USER_PROCESS) -> bytes:
    """One login record: ``login`` on terminal ``line`` (``pts/3``)."""
    return UTMP_RECORD.pack(
        kind, os.getpid(), line.encode(), line[-4:].encode(), login.encode(), b"", 0, 0, 0,
        int(time.time()), 0, 0, 0, 0, 0,
    )  # fmt: skip


def write_utmp(path: str, *entries: bytes) -> str:
    with open(path, "wb") as file:
        file.write(b"".join(entries))
    os.chmod(path, 0o644)
    return path
