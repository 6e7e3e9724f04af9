"""lipbench.outputs: the names a run may write, and refusals that keep other files safe."""

from __future__ import annotations

import os

import pytest

from lipbench.errors import InputError
from lipbench.outputs import (
    check_destination,
    output_names,
    refuse_input_as_output,
    refuse_overwriting_input,
    staging,
)


def test_output_names_derive_from_out(tmp_path):
    names = output_names(tmp_path / "d" / "talk.mp4")
    assert names.video.name == "talk.mp4"
    assert names.record.name == "talk.run.json"
    assert names.side.name == "talk.files" and names.audio.parent == names.side
    assert names.playlist == names.side / "stream" / "index.m3u8"
    with pytest.raises(InputError, match="must end in .mp4"):
        output_names(tmp_path / "talk.avi")


def test_an_output_that_is_an_input_is_refused_however_named(tmp_path):
    wav = tmp_path / "s.wav"
    wav.write_bytes(b"RIFF")
    os.link(wav, tmp_path / "same.wav")
    for out in (wav, tmp_path / "same.wav", tmp_path / "." / "s.wav"):
        with pytest.raises(InputError, match="is the input"):
            refuse_input_as_output([wav], [out])
    refuse_input_as_output([wav], [tmp_path / "other.wav"])  # a new file is fine
    names = output_names(tmp_path / "x.mp4")
    with pytest.raises(InputError, match="would overwrite the input"):
        refuse_overwriting_input(names, [names.side / "audio.wav"])


def test_destinations_that_would_clash_are_refused(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InputError, match="existing folder"):
        check_destination(output_names(tmp_path / "dir.mp4"))
    (tmp_path / "x.run.json").write_text("{}")
    (tmp_path / "x.files").mkdir()
    with pytest.raises(InputError, match="only by case"):
        check_destination(output_names(tmp_path / "X.mp4"))
    with pytest.raises(InputError, match="inside another run's side folder"):
        check_destination(output_names(tmp_path / "x.files" / "y.mp4"))
    check_destination(output_names(tmp_path / "x.mp4"))  # the same run again is fine


def test_staging_publishes_all_or_nothing(tmp_path):
    final = output_names(tmp_path / "r.mp4")
    with pytest.raises(RuntimeError), staging(final) as st:
        st.stage.video.write_bytes(b"v")
        raise RuntimeError("the run failed")
    assert not any(tmp_path.iterdir())  # nothing published, no staging left
    with staging(final) as st:
        st.stage.video.write_bytes(b"v")
        st.stage.record.write_text("{}")
        st.publish()
    assert final.video.read_bytes() == b"v" and final.record.exists() and final.side.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.files", "r.mp4", "r.run.json"]


def test_a_live_stream_stays_readable_at_its_printed_path_after_publishing(tmp_path):
    final = output_names(tmp_path / "r.mp4")
    with staging(final, keep_stream=True) as st:
        st.stage.stream.mkdir()
        st.stage.playlist.write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
        live = st.stage.playlist
        st.stage.video.write_bytes(b"v")
        st.stage.record.write_text("{}")
        st.publish()
    assert live.read_text() == final.playlist.read_text()
    assert os.path.samefile(live, final.playlist)  # hard links: no second copy


def test_a_run_that_cannot_fit_on_its_disk_is_refused_before_rendering(tmp_path, monkeypatch):
    import shutil

    from lipbench import outputs

    outputs.check_free_space(tmp_path, 100, 512, 512)  # this disk has room for 100 frames
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 5 * 2**20, 5 * 2**20),
    )  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"not enough free space .* 5 MB free"):
        outputs.check_free_space(tmp_path, 100, 512, 512)
