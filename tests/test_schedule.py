"""lipbench.schedule: the one rule for which replica renders which chunk, in what order."""

from __future__ import annotations

from lipbench.schedule import busiest_frames, replica_of, replica_queues


def test_chunk_k_goes_to_replica_k_mod_n_longest_first_or_in_play_order():
    frames = [10, 30, 20, 40]
    assert [replica_of(k, 2) for k in range(4)] == [0, 1, 0, 1]
    assert replica_queues(frames, 2, streamed=False) == [[2, 0], [3, 1]]
    assert replica_queues(frames, 2, streamed=True) == [[0, 2], [1, 3]]
    assert busiest_frames(frames, 2) == 70 and busiest_frames(frames, 1) == 100


def test_the_pool_plan_and_cost_model_follow_it():
    """The planner names chunk k's model after its replica, and the latency model starts a
    replica's second chunk after its first (the pool's queue order)."""
    import numpy as np

    from lipbench.keyframes import Keyframes
    from lipbench.plan import make_plan
    from lipbench.stream.stall import segment_schedule

    plan = make_plan(np.zeros(16000 * 4, dtype=np.float32), 25.0, 4, ["gan", "nogan"], snap_silence=False)  # fmt: skip
    assert [c.model for c in plan.chunks] == ["gan", "nogan", "gan", "nogan"]
    ready, _ = segment_schedule([25, 25, 25, 25], 2, 25.0, Keyframes(25.0, 1.0, 0.0))
    assert ready == [1.0, 1.0, 2.0, 2.0]
