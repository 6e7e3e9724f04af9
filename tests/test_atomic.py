"""lipbench.atomic: a result appears whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from lipbench.atomic import atomic_path, write_text_atomic


def test_the_target_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.parent == target.parent and tmp.name.endswith(".part.json")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_text_atomic(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in target.parent.iterdir()] == [
        "out.json"
    ]


def test_an_empty_result_is_not_published_and_modes_follow_the_umask(tmp_path):
    target = tmp_path / "x.wav"
    target.write_text("previous")
    with pytest.raises(OSError, match="nothing was written"), atomic_path(target):
        pass  # the tool wrote nothing
    assert target.read_text() == "previous"  # the previous file is kept
    write_text_atomic(target, "new")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
