"""Unit tests of how talk.py finds its parts where other packages are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
