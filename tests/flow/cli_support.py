"""What the flow's CLI tests share: running `fsm` and expecting one line of error."""

from __future__ import annotations

import pytest

from fsm.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `fsm argv`; expect exit status 2 and one line on stderr, no traceback."""
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
