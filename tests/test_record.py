"""The typed run record: one builder for the replica-pool path and the workflow path.

The same small job is rendered both ways — the pool (`Workbench.generate`) and the workflow's
units of work called from Python (`chunk.render_plan_chunk` per chunk, then `stitch.merge_job`)
— and the two records must have the same keys and leaf types."""

from __future__ import annotations

import json
from pathlib import Path

from lipbench import audio
from lipbench.chunk import render_plan_chunk
from lipbench.plan import plan_from_config
from lipbench.record import RECORD_VERSION, RunRecord, read_record, shape_of
from lipbench.stitch import merge_job

# Fields whose keys are data, not schema (stage names, pids, model names, package names).
MAPS = {"snakemake_benchmarks", "weights", "versions", "calibration", "samples"}


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


def test_pool_and_workflow_records_have_the_same_shape(workbench, speech_wav, tmp_path):
    cfg = workbench.cfg
    pool_rec = workbench.generate(
        tmp_path / "pool" / "result.mp4", audio=speech_wav, strategy="parallel",
        models=["gan", "nogan"], chunks=2, progress=False,
    )  # fmt: skip

    # the workflow path, step by step, as its rules run it
    wf = tmp_path / "wf"
    wf.mkdir()
    wav = audio.convert_to_wav16k(speech_wav, wf / "audio.wav")
    plan = plan_from_config(audio.read_wav(wav), cfg, ["gan", "nogan"], chunks=2)
    plan.save(wf / "plan.json")
    chunks = [wf / f"{k}.mp4" for k in range(plan.n_chunks)]
    for k, out in enumerate(chunks):
        render_plan_chunk(cfg, wav, wf / "plan.json", k, out, threads=1)
    bench = wf / "tts.tsv"
    bench.write_text("s\th:m:s\n0.5\t0:00:00\n")
    _, wf_rec = merge_job(cfg, wf / "plan.json", wav, chunks, wf / "result.mp4", wf / "run.json",
                          benchmarks=[bench], strategy="parallel")  # fmt: skip

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
    assert b["snakemake_benchmarks"] == {"tts": 0.5} and b["timings"]["tts"] == 0.5
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
