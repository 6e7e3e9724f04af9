"""Which replica renders which chunk, and in what order: the one rule the replica pool
follows and the cost model, the streaming latency model and the planner's model names
assume. No torch, no numpy."""

from __future__ import annotations

from collections.abc import Sequence


def replica_of(chunk: int, replicas: int) -> int:
    """Chunk k goes to replica k % replicas (so with models [gan, nogan] chunk 0 → GAN)."""
    if replicas < 1:
        raise ValueError(f"need at least one replica, got {replicas}")
    return chunk % replicas


def replica_queues(chunk_frames: Sequence[int], replicas: int, streamed: bool) -> list[list[int]]:
    """Per replica, the chunk indices it renders, in the order it renders them: longest
    first (the batch ends soonest), or, for a streamed job, in play order (a viewer needs
    chunk 1 before chunk 3)."""
    queues: list[list[int]] = [[] for _ in range(replicas)]
    for k in range(len(chunk_frames)):
        queues[replica_of(k, replicas)].append(k)
    if not streamed:
        for q in queues:
            q.sort(key=lambda k: -chunk_frames[k])  # stable: equal lengths keep chunk order
    return queues


def busiest_frames(chunk_frames: Sequence[int], replicas: int) -> int:
    """Frames on the replica with the most work (what a parallel job's time is set by)."""
    return max(
        sum(chunk_frames[k] for k in q) for q in replica_queues(chunk_frames, replicas, False)
    )
