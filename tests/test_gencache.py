"""The seeded generators' disk cache: a hit is bit-identical to a fresh build, the key covers
what determines the weights, and a bad file is rebuilt (never a crash, never a wrong model)."""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from lipbench import gencache
from lipbench.gencache import cache_file, cache_key, cached_seeded_generator
from lipbench.weights import load_generator, seeded_random_generator

SEED = 11


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "generators"
    monkeypatch.setenv("LIPBENCH_GENERATOR_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def fresh() -> nn.Module:
    return seeded_random_generator(SEED).eval()


@pytest.fixture(scope="module")
def good_file(fresh: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid cache file for SEED, written once for the module."""
    path = tmp_path_factory.mktemp("good") / "seed.pt"
    gencache._write(path, cache_key(SEED, 4), fresh.state_dict())
    return path


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, fresh: nn.Module) -> list[int]:
    """Count rebuilds; each returns a copy of ``fresh`` (a real build, ~2.4 s, is what
    test_cached_load_is_bit_identical checks)."""
    calls: list[int] = []

    def build(seed: int, calib_batch: int = 4) -> nn.Module:
        calls.append(seed)
        return copy.deepcopy(fresh)

    monkeypatch.setattr(gencache, "seeded_random_generator", build)
    return calls


def assert_identical(got: nn.Module, want: nn.Module) -> None:
    g, w = got.state_dict(), want.state_dict()
    assert list(g) == list(w)
    for k in w:
        assert g[k].dtype == w[k].dtype and g[k].device == w[k].device, k
        assert torch.equal(g[k], w[k]), k
    assert [(n, p.requires_grad) for n, p in got.named_parameters()] == [
        (n, p.requires_grad) for n, p in want.named_parameters()
    ]
    assert [(type(m), m.training) for m in got.modules()] == [
        (type(m), m.training) for m in want.modules()
    ]
    bn = [(m.momentum, m.eps) for m in got.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn == [(m.momentum, m.eps) for m in want.modules() if isinstance(m, nn.BatchNorm2d)]
    g_in = torch.Generator().manual_seed(0)
    mel = torch.rand(2, 1, 80, 16, generator=g_in) * 8 - 4
    face = torch.rand(2, 6, 96, 96, generator=g_in)
    with torch.no_grad():
        assert torch.equal(got(mel, face), want(mel, face))


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.mark.slow
def test_cached_load_is_bit_identical(fresh: nn.Module, caplog: pytest.LogCaptureFixture) -> None:
    path = cache_file(cache_key(SEED, 4))
    with caplog.at_level(logging.INFO, logger="lipbench.gencache"):
        built = cached_seeded_generator(SEED)  # miss: built and written
        assert path.is_file() and "built" in caplog.text
        caplog.clear()
        hit = cached_seeded_generator(SEED)
        assert "read from" in caplog.text and not messages(caplog, logging.WARNING)
        via_loader, info = load_generator("gan", "/nonexistent", seed=SEED)
    assert_identical(built, fresh)
    assert_identical(hit, fresh)
    assert_identical(via_loader, fresh)
    assert info.source == "seeded-random" and info.seed == SEED and not info.trained
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_a_weight(p: Path) -> None:  # still a valid zip: only the checksum notices
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))


def _other_seed(p: Path) -> None:  # a valid cache file, but of another key
    torch.save(
        {"format": "lipbench seeded generator", "key": cache_key(SEED + 1, 4), "state_dict": {}},
        p,
    )


@pytest.mark.parametrize(
    "corrupt",
    [_truncate, _flip_a_weight, _other_seed, lambda p: p.write_bytes(b"")],
    ids=["truncated", "flipped-byte", "other-key", "empty"],
)
@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(
    corrupt: Callable[[Path], None],
    fresh: nn.Module,
    good_file: Path,
    builds: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = cache_file(cache_key(SEED, 4))
    path.parent.mkdir(parents=True)
    shutil.copyfile(good_file, path)
    assert_identical(cached_seeded_generator(SEED), fresh)
    assert builds == []  # the good file is a hit
    corrupt(path)
    with caplog.at_level(logging.INFO, logger="lipbench.gencache"):
        rebuilt = cached_seeded_generator(SEED)
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "rebuilding" in warnings[0] and str(path) in warnings[0]
    assert builds == [SEED]
    assert_identical(rebuilt, fresh)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lipbench.gencache"):
        assert_identical(cached_seeded_generator(SEED), fresh)  # overwritten with a good file
    assert "read from" in caplog.text and not messages(caplog, logging.WARNING)
    assert builds == [SEED]


def test_unwritable_cache_still_gives_the_model(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fresh: nn.Module,
    builds: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LIPBENCH_GENERATOR_CACHE", str(blocker / "generators"))
    with caplog.at_level(logging.WARNING, logger="lipbench.gencache"):
        model = cached_seeded_generator(SEED)
    assert_identical(model, fresh)
    assert builds == [SEED]
    assert any("could not write" in m for m in messages(caplog, logging.WARNING))


def test_key_covers_what_determines_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache_file(cache_key(SEED, 4))
    assert base.parent == gencache.cache_dir()
    others = {cache_file(cache_key(SEED + 1, 4)), cache_file(cache_key(SEED, 8))}
    with monkeypatch.context() as mp:
        mp.setattr(torch, "__version__", "0.0.0-other")
        others.add(cache_file(cache_key(SEED, 4)))
    with monkeypatch.context() as mp:
        mp.setattr(gencache, "CACHE_VERSION", gencache.CACHE_VERSION + 1)
        others.add(cache_file(cache_key(SEED, 4)))
    with monkeypatch.context() as mp:
        mp.setattr(gencache, "_source_hash", lambda: "another architecture")
        others.add(cache_file(cache_key(SEED, 4)))
    assert len(others) == 5 and base not in others
    assert cache_file(cache_key(SEED, 4)) == base  # and it is stable


def test_default_folder_is_under_the_cache_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LIPBENCH_GENERATOR_CACHE")
    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path / "root"))
    assert gencache.cache_dir() == tmp_path / "root" / "generators"
