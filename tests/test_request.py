"""lipbench.request: the config read once into typed settings; a request checked whole
before any work."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lipbench.config import load_schema
from lipbench.errors import InputError
from lipbench.request import GenerateRequest, PlanSettings, Settings


@pytest.fixture
def settings(cfg) -> Settings:
    return Settings.from_config(cfg)


def test_typed_sections_mirror_the_schema(cfg, settings):
    """A key added to the schema's plan section must reach PlanSettings (and the reverse)."""
    schema = load_schema()["properties"]
    plan_keys = set(schema["plan"]["properties"])
    assert {f.name for f in fields(PlanSettings)} - {"cost_model"} == plan_keys
    assert settings.plan.cost_model.parts[-2:] == ("bench", "cost_model.json")
    assert settings.fps == float(cfg["fps"]) and settings.encoder.fps == settings.fps
    assert settings.job.weights.files == cfg["weights"]["files"]
    opts = settings.render_options()
    assert (
        opts.batch_size == cfg["render"]["batch_size"] and opts.backend == cfg["render"]["backend"]
    )
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):  # decided once
        settings.fps = 30.0  # type: ignore[misc]


def test_a_request_makes_every_choice(settings, tmp_path):
    req = GenerateRequest.build(settings, tmp_path / "r.mp4", strategy="parallel", chunks=2)
    assert req.text == settings.tts.default_text and req.audio is None
    assert req.lang == settings.tts.default_lang and req.engine not in ("", "auto")
    assert req.job.models == settings.job.parallel_models and req.job.chunks == 2
    assert req.outputs.video == tmp_path / "r.mp4" and req.avatar == "default"
    assert req.hooks.should_stop is None and not req.keep_live_stream


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"text": "hi", "audio": "a.wav"}, "either text or an audio file"),
        ({"strategy": "fast"}, "unknown strategy"),
        ({"chunks": 0}, "--chunks must be > 0"),
        ({"models": ["nope"]}, "unknown checkpoint"),
        ({"text": ""}, "text"),
        ({"text": "hi", "lang": "xx-nope"}, "language"),
        ({"out_name": "r.avi"}, "must end in .mp4"),
    ],
)
def test_bad_requests_fail_before_any_work(settings, tmp_path, kwargs, needle):
    out = tmp_path / kwargs.pop("out_name", "r.mp4")
    with pytest.raises(InputError, match=needle):
        GenerateRequest.build(settings, out, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_stream_needs_the_zerolatency_tune(make_config, tmp_path):
    settings = Settings.from_config(make_config(tmp_path, video={"tune": "film"}))
    GenerateRequest.build(settings, tmp_path / "plain.mp4")  # not streamed: fine
    with pytest.raises(InputError, match="zerolatency"):
        GenerateRequest.build(settings, tmp_path / "live.mp4", stream=True)


def test_no_module_below_the_pipeline_reads_the_config_dict():
    """The config dict is read by the front ends (cli, server, bench, the workflow) and by
    request/config/jobs, which turn it into typed settings; no other module indexes it
    (``cfg[...]`` / ``config[...]`` / ``cfg.get(...)`` in code, not in docstrings)."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "lipbench"
    front = {"cli.py", "config.py", "request.py", "jobs.py", "pipeline.py"}

    def reads_config(tree: ast.AST) -> bool:
        for node in ast.walk(tree):
            target = node.value if isinstance(node, ast.Subscript) else None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
            ):
                target = node.func.value
            if isinstance(target, ast.Name) and target.id in ("cfg", "config"):
                return True
        return False

    readers = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name not in front
        and p.parts[-2] not in ("server", "bench")
        and reads_config(ast.parse(p.read_text(encoding="utf-8")))
    )
    assert readers == []
