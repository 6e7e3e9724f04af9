"""`lipbench bench` (strategies suite): grid, schedule, speech, summaries, and one real run."""

from __future__ import annotations

import json
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lipbench import audio, bench, cli
from lipbench.errors import InputError, LipbenchError


# ---------------------------------------------------------------------------------------
# Grid and schedule
# ---------------------------------------------------------------------------------------
def test_grid_uses_the_planner_when_no_chunk_counts(cfg):
    configs = bench.grid_configs(bench.Grid(durations=[5, 12, 40], repeats=1), cfg)
    par = {c.duration_s: c.n_chunks for c in configs if c.strategy == "parallel"}
    # the seed policy: < 10 s → 1; ~15 s per chunk, at least 2; capped by the 2 replicas
    assert par == {5.0: 1, 12.0: 2, 40.0: 2}
    assert all(c.models == ("gan",) for c in configs if c.strategy == "sequential")
    assert [bench.planner_chunks(d, 2, cfg) for d in (5, 12, 40)] == [1, 2, 2]


def test_grid_explicit_chunks_and_model_sets(cfg):
    grid = bench.Grid(
        durations=[3],
        chunk_counts=[2, 4],
        model_sets=[["gan", "nogan"], ["gan", "gan"]],
        repeats=1,
    )
    configs = bench.grid_configs(grid, cfg)
    seq = [c for c in configs if c.strategy == "sequential"]
    assert seq == [bench.RunConfig(3.0, "sequential", 1, ("gan",))]  # deduplicated
    par = sorted((c.models, c.n_chunks) for c in configs if c.strategy == "parallel")
    assert par == [
        (("gan", "gan"), 2),
        (("gan", "gan"), 4),
        (("gan", "nogan"), 2),
        (("gan", "nogan"), 4),
    ]
    ids = {c.run_id(0, tag_models=True) for c in configs}
    assert len(ids) == len(configs)


def test_schedule_is_interleaved_and_reproducible(cfg):
    configs = bench.grid_configs(bench.Grid(durations=[1, 2, 3], chunk_counts=[2, 4]), cfg)
    sched = bench.run_order(configs, repeats=4, seed=0)
    assert len(sched) == 4 * len(configs)
    blocks = [[c for r, c in sched if r == rep] for rep in range(4)]
    for block in blocks:  # every repeat runs every configuration exactly once
        assert sorted(block, key=repr) == sorted(configs, key=repr)
    assert len({tuple(b) for b in blocks}) > 1  # the order changes between repeats
    assert bench.run_order(configs, 4, 0) == sched
    assert bench.run_order(configs, 4, 1) != sched


@pytest.mark.parametrize(
    "kw",
    [
        {"durations": []},
        {"durations": [-1]},
        {"durations": [5], "strategies": ["fastest"]},
        {"durations": [5], "chunk_counts": [0]},
        {"durations": [5], "repeats": 0},
        {"durations": [5], "model_sets": [[]]},
    ],
)
def test_bad_grids_raise_clear_errors(kw):
    with pytest.raises(InputError) as err:
        bench.Grid(**kw).validate()
    assert err.value.fix  # every message tells the user what to do


def test_cli_rejects_unreadable_lists(capsys):
    assert cli.main(["bench", "--durations", "five"]) == 2
    assert "error: cannot read durations" in capsys.readouterr().err


def test_speed_suite_dispatches_to_speedbench(monkeypatch, cfg):
    seen = {}

    def fake_main(args, cfg_):
        seen["args"] = args
        return 7

    monkeypatch.setitem(sys.modules, "lipbench.speedbench", types.SimpleNamespace(main=fake_main))
    args = Namespace(suite="speed", seconds=3.0)
    assert bench.main(args, cfg) == 7
    assert seen["args"] is args


# ---------------------------------------------------------------------------------------
# Parameters as notebooks pass them
# ---------------------------------------------------------------------------------------
def test_notebook_parameter_parsing():
    assert bench.as_list("5,10", float) == [5.0, 10.0]
    assert bench.as_list("[1, 2]", int) == [1, 2]
    assert bench.as_list(3, int) == [3]
    assert bench.as_list([1, 2.5], float) == [1.0, 2.5]
    assert bench.as_model_sets("gan+nogan;gan+gan") == [["gan", "nogan"], ["gan", "gan"]]
    assert bench.as_model_sets(["gan", "nogan"]) == [["gan", "nogan"]]
    assert bench.as_model_sets([["gan", "nogan"]]) == [["gan", "nogan"]]
    assert bench.as_model_sets('[["gan", "nogan"], ["gan"]]') == [["gan", "nogan"], ["gan"]]


# ---------------------------------------------------------------------------------------
# Speech of an exact duration
# ---------------------------------------------------------------------------------------
def test_fit_length_cuts_and_loops():
    x = np.linspace(0.1, 0.5, 1000, dtype=np.float32)
    cut = bench.fit_length(x, 600, fade=10)
    assert len(cut) == 600 and cut[0] == x[0] and cut[-1] == 0.0
    looped = bench.fit_length(x, 2500, fade=1)
    assert len(looped) == 2500
    assert np.array_equal(looped[1000:2000], x)  # second pass is the clip again
    with pytest.raises(InputError):
        bench.fit_length(np.zeros(0, np.float32), 10)


def test_make_speech_from_an_audio_file(tmp_path, cfg):
    tone = (0.2 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)  # 0.5 s
    src = audio.write_wav16k(tmp_path / "tone.wav", tone)
    out = bench.make_speech([0.25, 1.5], tmp_path / "sp", cfg, text_source=str(src))
    for d, sp in out.items():
        assert len(audio.read_wav(sp.wav)) == round(d * 16000)
        assert sp.tts_s is None and sp.engine is None
    assert out[1.5].looped and not out[0.25].looped


def test_make_speech_synthesises_each_duration(tmp_path, cfg):
    out = bench.make_speech([1.5], tmp_path / "sp", cfg)
    sp = out[1.5]
    assert len(audio.read_wav(sp.wav)) == 24000
    assert sp.engine == "piper" and sp.tts_s > 0 and sp.tts_speech_s >= 1.5
    samples = audio.read_wav(sp.wav)
    assert np.sqrt(np.mean(samples**2)) > 0.01  # real speech, not silence


def test_missing_text_source_is_a_clear_error(tmp_path, cfg):
    with pytest.raises(InputError, match="text source not found"):
        bench.make_speech([1], tmp_path, cfg, text_source=str(tmp_path / "nope.txt"))


# ---------------------------------------------------------------------------------------
# Summaries (numbers made up, so the expected values are exact)
# ---------------------------------------------------------------------------------------
def _rows(duration, strategy, chunks, totals, infer_share=0.9, planner=2, frames=250):
    label = "sequential" if strategy == "sequential" else f"parallel {chunks} chunks"
    rows = []
    for rep, total in enumerate(totals):
        rid = f"d{duration}-{strategy}-c{chunks}-r{rep}"
        stages = {"convert": 0.02, "detect": 0.01, "split": 0.03, "infer": total * infer_share,
                  "merge": 0.1, "total": total}  # fmt: skip
        pick = (planner == 1 and strategy == "sequential") or chunks == planner
        for stage, sec in stages.items():
            rows.append(
                {
                    "bench_id": "b",
                    "run_id": rid,
                    "repeat": rep,
                    "duration_s": float(duration),
                    "strategy": strategy,
                    "config": label,
                    "n_chunks": chunks,
                    "models": "gan+nogan",
                    "stage": stage,
                    "seconds": sec,
                    "frames": frames,
                    "planner_chunks": planner,
                    "planner_pick": pick,
                    "predicted_speedup": None,
                }  # fmt: skip
            )
    return rows


@pytest.fixture
def synthetic() -> pd.DataFrame:
    rows = (
        _rows(10, "sequential", 1, [10.0, 12.0, 14.0])
        + _rows(10, "parallel", 2, [6.0, 6.0, 8.0])
        + _rows(10, "parallel", 4, [7.0, 7.5, 8.0])
        + _rows(5, "sequential", 1, [5.0, 5.0, 5.0], planner=1)
        + _rows(5, "parallel", 2, [10.0, 10.0, 10.0], planner=1)
    )
    return pd.DataFrame(rows)


def test_summarize_speedup_spread_and_rate(synthetic):
    s = bench.summarize(synthetic).set_index(["duration_s", "config"])
    p2 = s.loc[(10.0, "parallel 2 chunks")]
    assert p2.runs == 3
    assert p2.median_total_s == 6.0 and p2.min_total_s == 6.0 and p2.max_total_s == 8.0
    assert p2.speedup_total == pytest.approx(12.0 / 6.0)
    assert p2.speedup_infer == pytest.approx(2.0)
    assert p2.frames_per_s == pytest.approx(250 / 5.4)
    assert p2.iqr_total_s == pytest.approx(1.0)  # quartiles 6.0 and 7.0
    assert s.loc[(10.0, "sequential")].speedup_total == pytest.approx(1.0)
    assert s.loc[(5.0, "parallel 2 chunks")].speedup_total == pytest.approx(0.5)
    table = bench.format_table(bench.summarize(synthetic))
    assert "2.00×" in table and "0.50×" in table and "← pick" in table


def test_decision_table_compares_planner_and_seed_rule(synthetic):
    dec = bench.decision_table(bench.summarize(synthetic)).set_index("duration_s")
    assert dec.loc[10.0, "best_config"] == "parallel 2 chunks"
    assert dec.loc[10.0, "best_chunks"] == 2
    assert dec.loc[10.0, "seed_rule_chunks"] == "2" and dec.loc[10.0, "seed_rule_agrees"]
    assert dec.loc[10.0, "planner_slower_than_best"] == pytest.approx(0.0)
    assert dec.loc[5.0, "best_chunks"] == 1 and dec.loc[5.0, "seed_rule_agrees"]
    assert bench.seed_rule(45) == "2–4" and bench.seed_rule_agrees(45, 4)
    assert not bench.seed_rule_agrees(45, 1)


def test_stage_table_folds_detect_into_split_and_adds_tts(synthetic):
    speech = pd.DataFrame({"duration_s": [5.0, 10.0], "tts_s": [0.4, 0.8]})
    st = bench.stage_table(synthetic, speech).set_index(["duration_s", "series"])
    row = st.loc[(10.0, "parallel 2 chunks")]
    assert row.tts == 0.8 and row.split == pytest.approx(0.04) and row.total == 6.0


def test_cost_model_prediction():
    m = bench.CostModel(fps=25, seq_fps={"gan": 30.0}, par_fps={("gan", "nogan"): 16.0})
    seq = bench.RunConfig(10.0, "sequential", 1, ("gan",))
    p2 = bench.RunConfig(10.0, "parallel", 2, ("gan", "nogan"))
    p3 = bench.RunConfig(10.0, "parallel", 3, ("gan", "nogan"))
    assert m.predicted_speedup(p2, seq) == pytest.approx((250 / 30) / (125 / 16), abs=1e-3)
    # 3 chunks on 2 replicas: the busiest replica renders 2/3 of the frames
    assert m.predicted_speedup(p3, seq) == pytest.approx((250 / 30) / (250 * 2 / 3 / 16), abs=1e-3)
    assert m.predicted_speedup(p2, None) is None


# ---------------------------------------------------------------------------------------
# One real bench through the CLI
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_bench(tmp_path_factory, make_config):
    root = tmp_path_factory.mktemp("bench")
    cfg_path = root / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config(root)))
    out = root / "out"
    argv = ["--config", str(cfg_path), "bench", "--durations", "1", "--chunks", "2",
            "--repeats", "2", "--out", str(out)]  # fmt: skip
    return argv, out


def test_cli_bench_end_to_end(cli_bench, capsys):
    argv, out = cli_bench
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    csv = out / "strategies.csv"
    df = pd.read_csv(csv)
    assert list(df.columns) == bench.COLUMNS
    runs = df.groupby("run_id").first()
    assert len(runs) == 4 and len(df) == 4 * len(bench.STAGES)
    assert sorted(df.stage.unique()) == sorted(bench.STAGES)
    for rep in (0, 1):  # each repeat ran both configurations
        assert set(runs[runs.repeat == rep].config) == {"sequential", "parallel 2 chunks"}
    assert set(runs.weights) == {"seeded-random"}
    assert (runs.frames == 25).all() and (runs.cores >= 1).all()
    par = runs[runs.strategy == "parallel"]
    assert (par.n_chunks == 2).all() and (par.replicas == 2).all()
    assert (runs.planner_chunks == 1).all()  # 1 s of speech: the planner says sequential

    # the printed speedup is median(sequential) / median(parallel) from this very CSV
    total = df[df.stage == "total"].groupby("config")["seconds"].median()
    speedup = total["sequential"] / total["parallel 2 chunks"]
    assert f"{speedup:.2f}×" in printed
    assert "SEEDED-RANDOM" in printed
    assert "median total" in printed and "best per duration" in printed

    summary = json.loads((out / "strategies.json").read_text())
    assert summary["weights_trained"] is False
    assert {r["config"] for r in summary["summary"]} == {"sequential", "parallel 2 chunks"}
    assert summary["decisions"][0]["duration_s"] == 1.0
    records = bench.load_runs(out / "strategies.runs.jsonl")
    assert len(records) == 4
    assert all(r["record"]["chunks"] and r["record"]["cpu"]["samples"] is not None for r in records)
    speech = pd.read_csv(out / "strategies.speech.csv")
    assert list(speech.duration_s) == [1.0] and speech.tts_s.iloc[0] > 0
    workdir = out / "runs" / "strategies"
    assert not (workdir / "warmup").exists()  # warm-up noise clips are not results
    for r in records:
        assert Path(r["record"]["outputs"]["video"]).is_file()


def test_run_grid_refuses_an_empty_grid_before_starting_anything(cfg, tmp_path):
    with pytest.raises(LipbenchError, match="unknown strategies"):
        bench.run_grid(cfg, bench.Grid(durations=[1], repeats=1, strategies=[]), tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_find_root_maps_the_notebooks_folder_to_the_checkout(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("fps: 25\n")
    (tmp_path / "notebooks").mkdir()
    assert bench.find_root(tmp_path / "notebooks") == tmp_path.resolve()
    assert bench.find_root(tmp_path) == tmp_path.resolve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert bench.find_root(other) == other.resolve()  # papermill's cwd is kept as is


def test_sequential_rows_carry_the_planners_parallel_pick(cfg):
    grid = bench.Grid(durations=[5, 12], chunk_counts=[2])
    seq12 = bench.RunConfig(12.0, "sequential", 1, ("gan",))
    par12 = bench.RunConfig(12.0, "parallel", 2, ("gan", "nogan"))
    # 12 s with two replicas: the planner says 2 chunks, whichever row carries it
    assert bench.planner_for(seq12, grid, cfg) == bench.planner_for(par12, grid, cfg) == 2
    assert bench.planner_for(bench.RunConfig(5.0, "sequential", 1, ("gan",)), grid, cfg) == 1


def _run(duration, strategy, chunks, total, repeat=0):
    label = "sequential" if strategy == "sequential" else f"parallel {chunks} chunks"
    models = ["gan"] if strategy == "sequential" else ["gan", "nogan"]
    return {"duration_s": duration, "strategy": strategy, "config": label, "n_chunks": chunks,
            "models": models, "repeat": repeat, "run_id": f"{label}-{duration}-{repeat}",
            "record": {"timings": {"total": total}}}  # fmt: skip


def test_showcase_picks_typical_runs_of_the_fastest_parallel_config():
    runs = [
        _run(5, "sequential", 1, 1.0),
        _run(30, "sequential", 1, 20.0, 0),
        _run(30, "sequential", 1, 30.0, 1),
        _run(30, "sequential", 1, 90.0, 2),
        _run(30, "parallel", 2, 14.0, 0),
        _run(30, "parallel", 2, 15.0, 1),
        _run(30, "parallel", 2, 40.0, 2),
        _run(30, "parallel", 4, 18.0, 0),
        _run(30, "parallel", 4, 19.0, 1),
        _run(30, "parallel", 4, 20.0, 2),
    ]
    seq, par = bench.showcase_runs(runs)
    assert seq["record"]["timings"]["total"] == 30.0  # the median run, not an outlier
    assert par["config"] == "parallel 2 chunks" and par["record"]["timings"]["total"] == 15.0
    assert bench.showcase_runs([]) == (None, None)
