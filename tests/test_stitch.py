"""lipbench.stitch: the workflow's merge reads only its own chunk jobs' facts."""

from __future__ import annotations

from lipbench.record import ChunkRow
from lipbench.stitch import placement, read_benchmarks


def _row(start: float, end: float) -> ChunkRow:
    return ChunkRow(chunk=1, model="gan", replica=1, pid=1, threads=1, device="cpu", attempts=1,
                    frame_start=0, frame_end=1, frames=1, start_ts=start, first_frame_ts=start,
                    end_ts=end, start_offset_s=0, end_offset_s=0, wall_s=end - start, render_s=0,
                    encode_s=0, fps=0, peak_rss_mb=0)  # fmt: skip


def test_placement_separates_queue_wait_from_render():
    info = {"host": "n1", "slurm_job_id": 7, "submit_ts": 100.0, "slurm_start_ts": 130.0,
            "step_start_ts": 140.0, "step_end_ts": 171.0}  # fmt: skip
    p = placement(_row(150.0, 170.0), info)
    assert (p.queue_wait_s, p.node_startup_s, p.setup_s, p.render_s, p.job_s) == (
        30,
        10,
        10,
        20,
        31,
    )
    local = placement(_row(150.0, 170.0), {**info, "submit_ts": None, "slurm_start_ts": None})
    assert local.queue_wait_s is None and local.setup_s == 10


def test_stamps_of_another_attempt_are_not_trusted():
    """A job_info from an earlier run does not enclose this chunk's render: left out."""
    info = {"host": "n1", "slurm_job_id": None, "submit_ts": None, "slurm_start_ts": None,
            "step_start_ts": 10.0, "step_end_ts": 40.0}  # fmt: skip
    assert placement(_row(150.0, 170.0), info) is None


def test_benchmarks_read_only_the_files_given(tmp_path):
    for name, s in (("tts", "1.5"), ("infer_chunk_5", "9.0")):
        (tmp_path / f"{name}.tsv").write_text(f"s\th:m:s\n{s}\t0:00:01\n")
    assert read_benchmarks([tmp_path / "tts.tsv"]) == {"tts": 1.5}  # the stale chunk 5 is not read
