"""lipbench.config: one schema with defaults; the workflow's --config-json; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import one_line_error, run_cli

from lipbench import audio, tts
from lipbench.config import load_config, load_schema
from lipbench.errors import InputError


def test_defaults_alone_make_a_config():
    cfg = load_config(None, None, read_default=False)
    assert cfg["fps"] == 25 and cfg["parallel"]["models"] == ["gan", "nogan"]
    assert cfg["face"]["max_side"] == 1920


def test_schema_engine_enum_matches_tts_engines():
    """YAML cannot import the engine list: this keeps the schema in step with lipbench.tts."""
    schema = load_schema()
    assert tuple(schema["properties"]["tts"]["properties"]["engine"]["enum"]) == tts.ENGINES


def test_invalid_value_names_its_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"fps": 1000}))
    with pytest.raises(InputError) as exc:
        load_config(path)
    assert "fps" in exc.value.problem and str(path) in exc.value.fix


def test_config_json_reads_no_file(tmp_path):
    """The workflow passes each rule its config sections as JSON; no file is read, so a
    config.yaml in the working directory cannot leak into a rule."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"fps": 50}))
    wav = audio.write_wav16k(tmp_path / "a.wav", np.zeros(16000 * 12, np.float32))
    given = json.dumps({"plan": {"policy": "fixed", "chunks": 3}})
    proc = run_cli("--config-json", given, "plan", wav, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["fps"] == 25 and plan["n_chunks"] == 3  # the cwd file's fps 50 was not read
    line = one_line_error(run_cli("--config-json", "{not json", "plan", "x.wav", cwd=tmp_path))
    assert "--config-json is not valid JSON" in line
