"""The typed run record: one builder for the replica-pool path and the workflow path.

The same small job is rendered both ways — the pool (`Workbench.generate`) and the workflow's
units of work called from Python (`chunk.render_plan_chunk` per chunk, then `stitch.merge_job`)
— and the two records must have the same keys and leaf types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipbench import audio
from lipbench.chunk import render_plan_chunk
from lipbench.plan import plan_audio
from lipbench.record import RECORD_VERSION, RunRecord, read_record
from lipbench.stitch import merge_job

# Fields whose keys are data, not schema (stage names, pids, model names, package names).
MAPS = {"snakemake_benchmarks", "weights", "versions", "calibration", "samples"}


def shape_of(value: object) -> object:
    """Keys and leaf types of a record's dict, the parity test compares (None matches any type)."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    return None if value is None else type(value).__name__


def same_shape(a, b, where="record") -> list[str]:
    """Differences in keys or leaf types (None matches any type: an optional field)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if where.rsplit(".", 1)[-1].split("[")[0] in MAPS:
            return []
        diffs = [f"{where}.{k}: only in one" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            diffs += same_shape(a[k], b[k], f"{where}.{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list):
        return same_shape(a[0], b[0], f"{where}[0]") if a and b else []
    if a is None or b is None or a == b:
        return []
    if {a, b} <= {"int", "float"}:  # a measured float can land on a whole number
        return []
    return [f"{where}: {a} vs {b}"]


def both_paths(wb, speech_wav, out: Path, models: list[str], chunks: int):
    """The same job rendered by the pool and by the workflow's units of work, called from
    Python as its rules call them (threads per chunk job from the plan, as `chunk_threads`)."""
    settings = wb.settings
    pool_rec = wb.generate(wb.request(out / "pool" / "result.mp4", audio=speech_wav,
                                      strategy="parallel", models=models, chunks=chunks,
                                      progress=False))  # fmt: skip
    wf = out / "wf"
    wf.mkdir(parents=True)
    wav = audio.convert_to_wav16k(speech_wav, wf / "audio.wav")
    job = wb.job("parallel", models, chunks)
    plan = plan_audio(audio.read_wav(wav), settings, list(job.models), chunks=chunks)
    plan.save(wf / "plan.json")
    threads = job.threads_per_replica(settings.job, plan.n_chunks)
    paths = [wf / f"{k}.mp4" for k in range(plan.n_chunks)]
    for k, path in enumerate(paths):
        render_plan_chunk(settings, wav, wf / "plan.json", k, path, threads=threads)
    bench = wf / "tts.tsv"
    bench.write_text("s\th:m:s\n0.5\t0:00:00\n")
    _, wf_rec = merge_job(settings, wf / "plan.json", wav, paths, wf / "result.mp4", wf / "run.json",
                          benchmarks=[bench], strategy="parallel", models=models)  # fmt: skip
    return pool_rec, wf_rec, plan


@pytest.mark.slow
def test_pool_and_workflow_records_have_the_same_shape(workbench, speech_wav, tmp_path):
    pool_rec, wf_rec, plan = both_paths(workbench, speech_wav, tmp_path, ["gan", "nogan"], 2)
    wf = tmp_path / "wf"
    a, b = pool_rec.to_dict(), wf_rec.to_dict()
    assert same_shape(shape_of(a), shape_of(b)) == []
    assert a["engine"] == "pool" and b["engine"] == "snakemake"
    assert a["record_version"] == b["record_version"] == RECORD_VERSION
    # the same frames were planned and rendered by the same checkpoints
    assert a["plan"]["chunks"] == b["plan"]["chunks"]
    assert (
        [c["model"] for c in a["chunks"]] == [c["model"] for c in b["chunks"]] == ["gan", "nogan"]
    )
    assert a["weights"] == b["weights"]
    assert (a["label"], a["threads_per_replica"]) == (b["label"], b["threads_per_replica"])
    assert b["snakemake_benchmarks"] == {"tts": 0.5} and b["timings"]["tts"] == 0.5
    # the face section: the same on both paths (settings as used, nothing faceless here)
    assert a["face"] == b["face"] and a["face"]["frames"] == a["frames"]
    assert a["face"]["frames_without_face"] == 0 and a["face"]["settings"]["blend"] == "feather"
    up = a["timings"]["startup"]
    assert up["inputs_s"] >= 0 and up["model_s"] >= 0 and up["first_batch_s"] > 0
    # what is on disk reads back into the same typed record
    on_disk = read_record(wf / "run.json")
    assert isinstance(on_disk, RunRecord) and on_disk.to_dict() == json.loads(
        (wf / "run.json").read_text()
    )
    assert on_disk.chunks[1].frame_start == plan.chunks[1].frame_start
    # every file a record names exists
    for rec in (a, b):
        for key in ("video", "record", "audio", "plan"):
            assert Path(rec["outputs"][key]).exists(), (rec["engine"], key)


@pytest.mark.slow
def test_the_two_paths_agree_on_label_and_threads(make_config, speech_wav, tmp_path):
    """A trained GAN with an untrained NOGAN: both paths label every frame of a two-chunk
    job; a one-chunk parallel job renders on one replica with every core on both paths."""
    import torch

    from lipbench.gencache import seeded_random_generator
    from lipbench.pipeline import Workbench
    from lipbench.weights import save_official_checkpoint

    weights = tmp_path / "weights"
    weights.mkdir()
    save_official_checkpoint(seeded_random_generator(7), weights / "wav2lip_gan.pth")
    cfg = make_config(tmp_path / "root", weights={"dir": str(weights)})
    torch.set_num_threads(2)
    with Workbench(cfg) as wb:
        for chunks in (2, 1):
            pool_rec, wf_rec, _ = both_paths(wb, speech_wav, tmp_path / f"c{chunks}", ["gan", "nogan"], chunks)  # fmt: skip
            a, b = pool_rec.to_dict(), wf_rec.to_dict()
            assert same_shape(shape_of(a), shape_of(b)) == []
            for key in (
                "label",
                "threads_per_replica",
                "one_chunk_on_full_replica",
                "weights_trained",
            ):
                assert a[key] == b[key], (chunks, key, a[key], b[key])
            assert [r["render"]["threads"] for r in a["replicas"]] == [
                c["threads"] for c in b["chunks"]
            ]
            if chunks == 2:
                assert a["label"] == "untrained weights" and not a["weights_trained"]
            else:
                assert a["label"] is None and a["one_chunk_on_full_replica"]


def _row(start: float, end: float):
    from lipbench.record import ChunkRow

    return ChunkRow(chunk=0, model="gan", replica=0, pid=1, threads=1, device="cpu", attempts=1,
                    frame_start=0, frame_end=1, frames=1, start_ts=start, first_frame_ts=start,
                    end_ts=end, start_offset_s=0, end_offset_s=0, wall_s=end - start, render_s=0,
                    encode_s=0, fps=0, peak_rss_mb=0)  # fmt: skip


def test_busy_seconds_is_the_union_of_render_intervals():
    """A chunk job that waited in a queue shows as idle time inside `infer`."""
    from lipbench.record import busy_seconds

    assert busy_seconds([_row(0, 4), _row(1, 3)]) == 4  # nested
    assert busy_seconds([_row(0, 2), _row(1, 5)]) == 5  # overlapping
    assert busy_seconds([_row(0, 2), _row(7, 9)]) == 4  # 5 s in a queue between them
    assert busy_seconds([_row(3, 3)]) == 0


def test_the_startup_split_adds_up_to_the_first_frame():
    """timings.startup: consecutive marks, so its parts add up to first_frame_s exactly."""
    from types import SimpleNamespace

    from lipbench.pipeline import startup

    origin, cli, imports, job, inputs, leased, first = (
        100.0,
        100.4,
        102.9,
        103.0,
        104.5,
        106.0,
        106.7,
    )
    req = SimpleNamespace(marks={"cli": cli, "imports": imports})
    done = SimpleNamespace(rows=[_row(leased, first + 1)], leased_ts=leased)
    done.rows[0].first_frame_ts = first
    s = startup(req, origin, job, inputs, done)
    assert (s.interpreter_s, s.imports_s, s.config_s) == (0.4, 2.5, 0.1)
    assert (s.inputs_s, s.model_s, s.first_batch_s) == (1.5, 1.5, 0.7)
    assert sum(s.to_dict().values()) == pytest.approx(first - origin, abs=1e-3)
    bare = startup(SimpleNamespace(marks={}), origin, job, inputs, done)  # the server: no marks
    assert bare.interpreter_s is None and bare.config_s is None and bare.first_batch_s == 0.7
