"""FaceSettings is the schema's face section, typed: same keys, same defaults, checked values;
build_inputs takes it (and, for now, the old whole-config form)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lipbench.config import load_schema
from lipbench.errors import InputError
from lipbench.face import FaceSettings
from lipbench.face.settings import resolve_cache_dir
from lipbench.inputs import build_inputs
from lipbench.stages import StageTimer


def _schema_face() -> dict:
    return load_schema()["properties"]["face"]["properties"]


def test_fields_are_exactly_the_schema_face_keys_with_its_defaults() -> None:
    props = _schema_face()
    fields = {f.name: f.default for f in dataclasses.fields(FaceSettings)}
    assert set(fields) == set(props)
    for name, default in fields.items():
        want = props[name]["default"]
        assert (list(default) if isinstance(default, tuple) else default) == want, name
        assert props[name].get("description"), f"face.{name} has no description"
    assert FaceSettings() == FaceSettings(**{k: v["default"] for k, v in props.items()})


def test_built_from_a_validated_config(cfg) -> None:
    s = FaceSettings(**cfg["face"])
    assert s.detector == "yunet" and s.blend == "feather" and s.loop == "pingpong"
    assert s.pads == (0, 10, 0, 0) and isinstance(s.pads, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.blend = "box"  # type: ignore[misc]
    assert s.to_dict()["pads"] == [0, 10, 0, 0]


@pytest.mark.parametrize(
    ("key", "value"),
    [("detector", "dlib"), ("loop", "bounce"), ("blend", "alpha"), ("select", "middle"),
     ("fade_s", -1), ("fade_s", "soon"), ("pads", [1, 2]), ("smooth_frames", -2),
     ("max_side", 10)],
)  # fmt: skip
def test_bad_values_are_one_input_error(key: str, value: object) -> None:
    with pytest.raises(InputError) as ei:
        FaceSettings(**{key: value})
    assert "\n" not in str(ei.value) and ei.value.fix


def test_cache_dir_auto_is_the_user_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path))
    assert FaceSettings().cache_path == tmp_path / "faces"
    monkeypatch.delenv("LIPBENCH_CACHE")
    assert resolve_cache_dir("auto") == Path.home() / ".cache" / "lipbench" / "faces"
    assert resolve_cache_dir("none") is None and resolve_cache_dir("") is None
    assert FaceSettings(cache_dir="~/x").cache_path == Path.home() / "x"


def test_build_inputs_takes_the_typed_face_settings(cfg, speech_wav) -> None:
    face = FaceSettings(**cfg["face"])
    job, samples = build_inputs(face, 25.0, speech_wav, None, StageTimer(), "job-a")
    assert job.n_frames == round(len(samples) / 16000 * 25) > 0
    assert job.blend == "feather" and job.meta == {"key": "job-a"} and job.boxes.detector == "yunet"


def test_build_inputs_with_a_video_avatar(tmp_path: Path) -> None:
    """One code path for every caller: the settings' loop, blend and detector reach the job,
    and detection looks only at the frames the audio uses."""
    import numpy as np
    import soundfile as sf
    from fixtures.face_clips import moving_clip, write_video

    clip = write_video(tmp_path / "clip.mp4", moving_clip("pan", n=40).frames, 50.0)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(16000 // 2, np.float32), 16000)  # 0.5 s: 12 or 13 frames
    face = FaceSettings(avatar=str(clip), blend="box", loop="repeat", cache_dir=str(tmp_path / "c"))
    job, _ = build_inputs(face, 25.0, wav, None, StageTimer(), "video-job")
    assert job.blend == "box" and job.boxes.timeline.loop == "repeat"
    assert job.boxes.timeline.avatar_fps == 50.0 and job.boxes.timeline.out_fps == 25.0
    # 0.5 s at 25 fps shows every second frame of the 50 fps clip, only those were looked at
    assert list(job.boxes.index) == [2 * i for i in range(job.n_frames)]
    assert job.boxes.faceless_summary()["frames"] == job.n_frames
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
