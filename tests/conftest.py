"""Shared fixtures: an isolated config (results and caches under tmp) and short real speech."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from lipbench.config import load_config

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gather what `make test-fast` leaves out: a test that renders through the warm
    workbench runs the whole pipeline (``slow``); one that runs the CLI from a config file
    starts fresh interpreters (``process``)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "workbench" in names:
            item.add_marker(pytest.mark.slow)
        if "config_file" in names:
            item.add_marker(pytest.mark.process)


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    # Everything must work offline; make accidental proxies irrelevant for local servers.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(var, None)
    yield


@pytest.fixture(autouse=True, scope="session")
def _generator_cache():
    """Seeded generators (~145 MB per seed) and saved OpenVINO networks are cached on disk:
    keep the suite's out of the user's cache. One folder each for the session, shared with
    the CLI and replica processes the tests start (they inherit the variables); removed at
    the end."""
    folder = tempfile.mkdtemp(prefix="lipbench-generators-")
    networks = tempfile.mkdtemp(prefix="lipbench-ov-networks-")  # ~140 MB per checkpoint
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPBENCH_GENERATOR_CACHE", folder)
        mp.setenv("LIPBENCH_OV_CACHE", networks)
        yield
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(networks, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lipbench")


def make_cfg(root: Path, **overrides) -> dict:
    """The repo's config with every output and cache under ``root``."""
    base = {
        "results_dir": str(root / "results"),
        "face": {"cache_dir": str(root / "face-cache")},
        "weights": {"dir": str(root / "weights")},
        "jobs": [],
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return load_config(REPO / "config" / "config.yaml", base)


@pytest.fixture(scope="session")
def cfg(session_dir) -> dict:
    return make_cfg(session_dir)


@pytest.fixture(scope="session")
def speech_wav(session_dir) -> Path:
    """~2.5 s of real English speech (espeak-ng, offline) as a 16 kHz mono WAV."""
    from lipbench import audio, tts

    raw = session_dir / "speech_raw.wav"
    tts.synthesize(
        "Hello there. This sentence tests the lip sync pipeline.", "en", raw, engine="espeak"
    )
    return audio.convert_to_wav16k(raw, session_dir / "speech16k.wav")


@pytest.fixture(scope="session")
def make_config():
    """Factory: ``make_config(root, **overrides)`` → a validated config rooted at ``root``."""
    return make_cfg


@pytest.fixture(scope="session")
def workbench(session_dir):
    """One warm Workbench for the whole session (its pools start once)."""
    from lipbench.pipeline import Workbench

    with Workbench(make_cfg(session_dir / "wb")) as wb:
        yield wb


@pytest.fixture(scope="session")
def config_file(tmp_path_factory) -> Path:
    """A config file for CLI runs: results, caches and weights under a temp folder."""
    root = tmp_path_factory.mktemp("cli")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(results_dir=str(root / "results"), jobs=[])
    cfg["face"]["cache_dir"] = str(root / "faces")
    cfg["weights"]["dir"] = str(root / "weights")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def model():
    """The seeded model the backend, tuning and render tests share (seed 3)."""
    from helpers import seeded_model

    return seeded_model(3)
