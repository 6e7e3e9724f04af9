"""lipbench.batch with a fake host: feeding in queue order, a retry after a replica death,
a second death failing the chunk, cancel and drain — no process, no render."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lipbench.batch import Batch, ChunkFailed
from lipbench.record import ChunkRow
from lipbench.replica import Cancelled, ChunkTask, Done, Error, Progress, Started


def _row(task: ChunkTask, replica: int) -> ChunkRow:
    return ChunkRow(chunk=task.chunk_index, model="gan", replica=replica, pid=1, threads=1,
                    device="cpu", attempts=1, frame_start=task.start, frame_end=task.end,
                    frames=task.end - task.start, start_ts=0.0, first_frame_ts=0.0, end_ts=1.0,
                    start_offset_s=0.0, end_offset_s=0.0, wall_s=1.0, render_s=1.0, encode_s=0.0,
                    fps=1.0, peak_rss_mb=1.0)  # fmt: skip


@dataclass
class FakeHost:
    """Replicas that finish a chunk one poll after it was sent, unless told to die or fail."""

    replicas: int
    die: dict[int, int] = field(default_factory=dict)  # chunk → times its replica dies on it
    fail: set[int] = field(default_factory=set)  # chunks that raise inside the replica
    hang: bool = False  # never finish (for cancel)
    drains: bool = True  # answers a cancel in time
    sent: list[tuple[int, int]] = field(default_factory=list)  # (replica, chunk) in order
    inbox: list = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    events: list[tuple[str, dict]] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    def model(self, rid: int) -> str:
        return "gan"

    def send(self, rid: int, task: ChunkTask) -> None:
        self.sent.append((rid, task.chunk_index))
        self.inbox.append(Started(rid, task.task_id))
        if self.die.get(task.chunk_index, 0) > 0:
            self.die[task.chunk_index] -= 1
            self.dead.add(rid)
        elif task.chunk_index in self.fail:
            self.inbox.append(Error(rid, task.task_id, "Traceback ...\nValueError: bad frame"))
        elif not self.hang:
            self.inbox += [Progress(rid, task.task_id, task.end - task.start),
                           Done(rid, task.task_id, _row(task, rid), {"first": None})]  # fmt: skip

    def poll(self, timeout: float) -> list:
        out, self.inbox = self.inbox, []
        return out

    def ready(self, rid: int, row) -> None:
        pass

    def lost(self, rid: int) -> bool:
        return rid in self.dead

    def reap(self, rid: int) -> int | None:
        return -9

    def restart(self, rid: int) -> None:
        self.dead.discard(rid)
        self.restarted.append(rid)

    def cancel(self, rid: int) -> None:
        self.cancelled.append(rid)

    def drain(self, rid: int, task_id: int) -> bool:
        return self.drains

    def discard(self, rid: int) -> None:
        self.discarded.append(rid)

    def pid(self, rid: int) -> int | None:
        return 1000 + rid

    def emit(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))


def tasks(tmp_path, sizes: list[int]) -> list[ChunkTask]:
    out, start = [], 0
    for k, n in enumerate(sizes):
        out.append(ChunkTask(100 + k, None, start, start + n, str(tmp_path / f"chunk_{k}.mp4"), None, k))  # fmt: skip
        start += n
    return out


def test_each_replica_works_through_its_queue_in_order(tmp_path):
    host = FakeHost(2)
    done_frames: list[int] = []
    rows, edges = Batch(host, tasks(tmp_path, [10, 30, 20, 40]), [[2, 0], [3, 1]], done_frames.append).run()  # fmt: skip
    assert sorted(rows) == [100, 101, 102, 103] and set(edges) == set(rows)
    by_replica = {r: [c for rr, c in host.sent if rr == r] for r in (0, 1)}
    assert by_replica == {0: [2, 0], 1: [3, 1]}
    assert sum(done_frames) == 100
    assert all(rows[t].attempts == 1 for t in rows)


def test_a_replica_death_is_retried_once_on_a_fresh_replica(tmp_path):
    host = FakeHost(2, die={1: 1})
    rows, _ = Batch(host, tasks(tmp_path, [5, 5]), [[0], [1]]).run()
    assert host.restarted == [1] and rows[101].attempts == 2 and rows[100].attempts == 1
    assert [k for k, _ in host.events] == ["started", "started", "replica_died", "started"]


def test_a_second_death_fails_the_chunk_and_removes_its_partial_file(tmp_path):
    partial = tmp_path / ".chunk_0.abc.part.mp4"
    partial.write_bytes(b"half")
    host = FakeHost(1, die={0: 2})
    with pytest.raises(ChunkFailed, match=r"chunk 0 \(frames 0–5\) failed twice"):
        Batch(host, tasks(tmp_path, [5]), [[0]]).run()
    assert host.discarded == [0] and not partial.exists()


def test_an_error_inside_a_replica_names_the_chunk_and_its_last_line(tmp_path):
    host = FakeHost(1, fail={0})
    with pytest.raises(ChunkFailed, match="chunk 0 .* failed on replica 0 .*ValueError: bad frame"):
        Batch(host, tasks(tmp_path, [5]), [[0]]).run()


@pytest.mark.parametrize("drains", [True, False])
def test_should_stop_cancels_in_flight_chunks_and_drains_them(tmp_path, drains):
    host = FakeHost(2, hang=True, drains=drains)
    with pytest.raises(Cancelled):
        Batch(host, tasks(tmp_path, [5, 5]), [[0], [1]], should_stop=lambda: True).run()
    assert sorted(host.cancelled) == [0, 1]
    # a replica that answers stays warm; one that does not is discarded (replaced later)
    assert host.discarded == ([] if drains else [0, 1])


def test_a_message_from_an_earlier_batch_is_ignored(tmp_path):
    host = FakeHost(1)
    host.inbox.append(Done(0, 7, None, {}))  # task id 7 belongs to no task of this batch
    rows, _ = Batch(host, tasks(tmp_path, [3]), [[0]]).run()
    assert list(rows) == [100]
