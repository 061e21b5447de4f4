"""Unit tests of how talk.py finds its parts where other packages are installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_talk_uses_the_pubmarine_beside_it_even_where_pubmarine_0_4_3_is_installed(
    tmp_path: Path,
) -> None:
    # The layout of a site-packages with both installed: pubmarine 0.4.3 is a package, and a
    # package wins over a module of the same name in the same directory.
    for name in ("talk.py", "pubmarine.py"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "pubmarine").mkdir()
    (tmp_path / "pubmarine" / "__init__.py").write_text("class PubPen:\n    pass\n")
    script = "import talk, pubmarine; print(pubmarine.__file__, hasattr(talk.PubPen, 'drain'))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [str(tmp_path / "pubmarine.py"), "True"], result


# -- the command knows its own name and version --------------------------------------------------

TALK_PY = REPO_ROOT / "talk.py"


def run_talk(
    *args: str, python: str = sys.executable, cwd: Path = REPO_ROOT, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, *flags, str(cwd / "talk.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_and_version_name_the_command_that_was_run() -> None:
    import pubmarine

    helped = run_talk("--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: talk.py [--socket PATH] [USER [TTY]]\n"), helped.stdout
    version = run_talk("--version")
    assert (version.returncode, version.stdout) == (0, f"talk.py {pubmarine.__version__}\n")


_AS_PUBTALK = "import sys; sys.argv[0] = 'pubtalk'; import talk; sys.exit(talk.main())"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--list", "bob"], "--list takes no USER"),
        (["bob", "../etc/passwd"], "'../etc/passwd' is not the name of a terminal (such as pts/3)"),
        (["bob", "pts/1", "extra"], "unrecognized arguments: extra"),
    ],
)
@pytest.mark.parametrize("command", ["talk.py", "pubtalk"])
def test_a_wrong_command_line_is_one_line_with_talks_prefix_and_status_2(
    args: list[str], why: str, command: str
) -> None:
    """Whatever the command is called, its errors all begin "talk:", as the manual says; a
    wrong command line exits 2, which the manual lists."""
    if command == "talk.py":
        result = run_talk(*args)
    else:
        result = subprocess.run(
            [sys.executable, "-c", _AS_PUBTALK, *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"talk: {why} (see {command} --help)\n"
    assert "2 when the command line is wrong" in plain(man_page_text())


def test_the_version_is_in_one_place() -> None:
    """setup.cfg takes the package's version from pubmarine.py, which talk.py shows."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg", encoding="utf-8")
    assert config["metadata"]["version"] == "attr: pubmarine.__version__"
    assert config["metadata"]["author"]


def plain(text: str) -> str:
    """``text`` with its white space folded and without quotes (roff uses them for its own)."""
    return " ".join(text.replace('"', "").split())


def man_page_text() -> str:
    """pubtalk.1 as plain text: its roff requests and escapes taken out."""
    words = []
    for line in (REPO_ROOT / "pubtalk.1").read_text(encoding="utf-8").splitlines():
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            line = line.partition(" ")[2]  # a request (.TP, .B, ...) and what it sets in type
        words.append(line.replace("\\-", "-").replace("\\&", ""))
    return plain(" ".join(words))


def test_the_manual_page_says_what_help_says() -> None:
    import talk

    manual = man_page_text()
    parser = talk.make_parser()
    for action in parser._actions:
        for option in action.option_strings:
            assert option in manual, option
        assert plain(str(action.help)) in manual, action.help
    assert plain(str(parser.description)) in manual
    for row in talk.KEYS:
        assert plain(f"{row.keys} {row.does}") in manual, row
    pasting = plain(str(parser.epilog)).rpartition("quit. ")[2]
    assert pasting in manual, pasting


# -- clear errors where Python fails first -------------------------------------------------------


@pytest.mark.parametrize("version", ["3.7", "3.8"])
def test_an_older_python_gets_one_line_saying_what_talk_needs(version: str) -> None:
    # pyenv's own, if there is one: its shims on PATH fail for a version that is not selected.
    pyenv = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    found = sorted(glob.glob(pyenv)) or [p for p in [shutil.which(f"python{version}")] if p]
    python = found[-1] if found else None
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    result = run_talk("--help", python=python)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"talk: needs Python 3.9 or later; this is Python {version}\n"


def test_talk_py_alone_says_it_needs_the_pubmarine_py_beside_it(tmp_path: Path) -> None:
    """talk.py copied alone, run by a Python with nothing installed: ``-S`` leaves out every
    site-packages, where a developer's environment (``pip install -e .``) has pubmarine."""
    shutil.copy(TALK_PY, tmp_path / "talk.py")
    result = run_talk("--help", cwd=tmp_path, flags=("-I", "-S"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(
        f"talk: needs the pubmarine.py that ships with it, beside talk.py in {tmp_path} "
    ), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
