"""What the speed suite's steps share: options, the suite's state and rows, the load line,
and a replica spec from the config (``lipbench.bench.speed_suite`` runs the steps)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .contamination import Contamination

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    out: Path
    seconds: float = 20.0  # end-to-end clip length
    variant_seconds: float = 4.0  # timing per network measurement
    memory: bool = True  # the 10 s / 60 s peak-RSS check
    stage_seconds: float = 1.5  # timing per paste / encode measurement


@dataclasses.dataclass
class Suite:
    """What the steps share: the config, device, thread counts and the rows so far."""

    cfg: dict[str, Any]
    opts: SpeedOptions
    say: Say
    device: str
    threads: int  # the sequential replica's thread count
    limit: float
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """The replica's threads and 1 (the parallel cost model's unit); one count on a GPU."""
        return (self.threads, 1) if self.threads > 1 and self.device == "cpu" else (self.threads,)

    def add(self, row: dict[str, Any], cont: Contamination | None) -> dict[str, Any]:
        if cont is not None:
            row["others_pct"] = round(100 * cont.share, 1)
            row["clean"] = cont.clean(self.limit)
        self.rows.append(row)
        return row


def busy(row: dict[str, Any]) -> str:
    return "" if row.get("clean", True) else "  BUSY"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def replica_spec(cfg: dict[str, Any], model: str, threads: int, device: str, options: Any = None) -> Any:  # fmt: skip
    """A ``chunk.ReplicaSpec`` for ``model`` from the config, its render options replaced by
    ``options`` when given."""
    from ..chunk import ReplicaSpec
    from ..request import Settings

    spec = ReplicaSpec.for_model(Settings.from_config(cfg), model, threads, device)
    return spec if options is None else dataclasses.replace(spec, render_options=options)
