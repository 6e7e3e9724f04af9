"""lipbench.measured_cost: predictions from a measured cost model, and the count it picks."""

from __future__ import annotations

import json

import pytest

from lipbench.errors import InputError
from lipbench.keyframes import Keyframes
from lipbench.measured_cost import MeasuredCost, even_split, load_measured_cost

COST = MeasuredCost(cpu="test", cores=2, thread_fps={1: 10.0, 2: 16.0}, concurrent_fps={2: 9.0},
                    overhead_s={"sequential": 1.0, "parallel": 2.0},
                    startup_s={"sequential": 0.5, "parallel": 0.8})  # fmt: skip


def test_predicted_time_is_the_busiest_replica_plus_the_fixed_cost():
    assert COST.predict_s(160, 1, 2) == pytest.approx(160 / 16 + 1.0)
    assert COST.predict_s(160, 2, 2) == pytest.approx(80 / 9 + 2.0)
    # uneven chunks: the replica with more frames sets the time (schedule.replica_queues)
    assert COST.predict_s(160, 2, 2, chunk_frames=[100, 60]) == pytest.approx(100 / 9 + 2.0)
    assert COST.predict_s(160, 3, 2, chunk_frames=[50, 60, 50]) == pytest.approx(100 / 9 + 2.0)


def test_the_best_count_is_never_predicted_worse_than_sequential():
    assert COST.best_chunks(160, 2, 4) == 2  # 10.9 s < 11 s
    assert COST.best_chunks(20, 2, 4) == 1  # short: the fixed cost dominates
    slow = MeasuredCost("t", 2, {2: 16.0}, {2: 5.0}, {"sequential": 1.0, "parallel": 2.0})
    assert slow.best_chunks(1000, 2, 4) == 1  # two replicas at 5 frames/s lose to one at 16
    played = COST.predict_playback(100, 2, 2, Keyframes(25.0))
    assert played is not None and played.first_playable_s > 0.8


def test_it_round_trips_and_a_missing_or_bad_file_is_one_line(tmp_path):
    path = tmp_path / "cost_model.json"
    with pytest.raises(InputError, match="no cost model"):
        load_measured_cost(path)
    path.write_text(json.dumps(COST.to_dict()))
    assert load_measured_cost(path) == COST
    path.write_text("{}")
    with pytest.raises(InputError, match="cannot read the cost model"):
        load_measured_cost(path)
    assert even_split(10, 3) == [3, 4, 3] and sum(even_split(7, 9)) == 7
