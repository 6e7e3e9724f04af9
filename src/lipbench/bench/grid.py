"""The grid: which comparisons a bench makes, and the protocol that measures each one.

A *comparison* is one duration × one parallel configuration against the sequential strategy
at the same duration. It is measured in *pairs* — a sequential and a parallel run adjacent in
time, in alternating order — so slow drift and other work on the machine hit both sides of a
pair alike; the speed-up is computed per pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from ..errors import InputError
from ..jobs import STRATEGIES, resolve_job
from ..measured_cost import MeasuredCost
from ..plan import planned_chunks


@dataclass(frozen=True)
class RunConfig:
    """One way to render one duration."""

    duration_s: float
    strategy: str
    n_chunks: int
    models: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.strategy == "sequential":
            return "sequential"
        return f"parallel {self.n_chunks} chunk{'s' if self.n_chunks != 1 else ''}"

    @property
    def chunks(self) -> int | None:
        """The chunk count to ask the pipeline for (sequential decides its own: 1)."""
        return self.n_chunks if self.strategy == "parallel" else None

    def run_id(self, attempt: int, tag_models: bool = False) -> str:
        d = f"{self.duration_s:g}".replace(".", "p")
        m = f"-{'+'.join(self.models)}" if tag_models else ""
        return f"d{d}s-{self.strategy}-c{self.n_chunks}{m}-p{attempt}"


@dataclass(frozen=True)
class Comparison:
    """Sequential vs one parallel configuration at one duration."""

    sequential: RunConfig
    parallel: RunConfig

    @property
    def duration_s(self) -> float:
        return self.parallel.duration_s

    def key(self, tag_models: bool = False) -> str:
        m = f" [{'+'.join(self.parallel.models)}]" if tag_models else ""
        return f"{self.duration_s:g} s · {self.parallel.label}{m}"


@dataclass
class Grid:
    """What to compare and how hard to try. Defaults and meaning: the schema's ``sweep``."""

    durations: list[float]
    chunk_counts: list[int] | None = None  # parallel chunk counts; None = the planner's pick
    model_sets: list[list[str]] | None = None  # parallel replicas; None = the config's
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    min_pairs: int = 3
    max_pairs: int = 8
    ci_target: float = 0.1
    max_contamination: float = 0.05
    reruns: int = 3
    warmup_s: float = 2.0
    cost_clip_s: float = 4.0
    seed: int = 0
    sequential_model: str | None = None  # None = the config's
    stream: bool = True  # timed runs stream, so their latency is a streamed video's

    @classmethod
    def from_config(cls, cfg: dict[str, Any], **overrides: Any) -> Grid:
        """The config's ``sweep`` section, with every override that is not None over it.
        Numbers given as text (``snakemake --config`` passes nested values so) are cast."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg["sweep"].items() if k in known}
        values["seed"] = cfg["seed"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("chunk_counts") == "planner":
            values["chunk_counts"] = None
        try:
            for name, cast in _CASTS.items():
                v = values.get(name)
                if v is not None:
                    values[name] = [cast(x) for x in v] if isinstance(v, list) else cast(v)
        except ValueError as exc:
            raise InputError(f"sweep: {exc}", "give numbers (stream: true or false), e.g. sweep={durations: [5, 10]}") from None  # fmt: skip
        return cls(**values).validate()

    def validate(self) -> Grid:
        if not self.durations:
            raise InputError("no durations given", "e.g. --durations 5,10,20")
        bad = [d for d in self.durations if not (isinstance(d, int | float) and 0 < d <= 600)]
        if bad:
            raise InputError(
                f"durations must be seconds in (0, 600], got {bad}", "e.g. --durations 5,10,20"
            )
        if sorted(self.strategies) != sorted(STRATEGIES):
            raise InputError(
                f"the bench compares strategies in pairs, got {self.strategies or '(none)'}",
                f"give both: {','.join(STRATEGIES)}",
            )
        if self.chunk_counts is not None and (
            not self.chunk_counts or any(int(c) != c or c < 1 for c in self.chunk_counts)
        ):
            raise InputError(
                f"chunk counts must be integers ≥ 1, got {self.chunk_counts}", "e.g. --chunks 2,4"
            )
        if self.model_sets is not None and (
            not self.model_sets or any(not ms for ms in self.model_sets)
        ):
            raise InputError("every model set needs at least one model", "e.g. --models gan,nogan")
        if not 2 <= self.min_pairs <= self.max_pairs:
            raise InputError(
                f"need 2 ≤ min pairs ≤ max pairs, got {self.min_pairs} and {self.max_pairs}",
                "e.g. --min-pairs 3 --max-pairs 8",
            )
        if not isinstance(self.stream, bool):
            raise InputError(f"sweep.stream must be true or false, got {self.stream!r}", "e.g. sweep={stream: false}")  # fmt: skip
        if not 0 < self.max_contamination <= 1 or self.reruns < 0 or self.ci_target <= 0:
            raise InputError(
                "max contamination must be in (0, 1], reruns ≥ 0 and the CI target > 0",
                "e.g. --max-contamination 0.05 --reruns 3 --ci-target 0.1",
            )
        return self

    def parallel_sets(self, cfg: dict[str, Any]) -> list[tuple[str, ...]]:
        sets = self.model_sets or [list(cfg["parallel"]["models"])]
        return [resolve_job(cfg, "parallel", list(ms)).models for ms in sets]

    def sequential_models(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        given = [self.sequential_model] if self.sequential_model else None
        return resolve_job(cfg, "sequential", given).models


def as_bool(value: Any) -> bool:
    """A switch as the config or ``snakemake --config`` gives it (true, "false", "True", …)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


_CASTS: dict[str, Callable[[Any], Any]] = {
    "durations": float, "chunk_counts": int, "min_pairs": int, "max_pairs": int,
    "ci_target": float, "max_contamination": float, "reruns": int, "warmup_s": float,
    "cost_clip_s": float, "stream": as_bool,
}  # fmt: skip


def comparisons(
    grid: Grid, cfg: dict[str, Any], cost: MeasuredCost | None = None
) -> list[Comparison]:
    """Every comparison once, in a stable order. Models come from ``jobs.resolve_job``;
    chunk counts from the grid, else what the planner would pick at that duration."""
    seq_models = grid.sequential_models(cfg)
    out: list[Comparison] = []
    for d in grid.durations:
        seq = RunConfig(float(d), "sequential", 1, seq_models)
        for models in grid.parallel_sets(cfg):
            counts = grid.chunk_counts or [
                planner_for(float(d), len(models), cfg, cost, grid.stream)
            ]
            for c in counts:
                comp = Comparison(seq, RunConfig(float(d), "parallel", int(c), models))
                if comp not in out:
                    out.append(comp)
    return out


def planner_for(
    duration_s: float, replicas: int, cfg: dict[str, Any], cost: MeasuredCost | None = None,
    stream: bool = True,
) -> int:  # fmt: skip
    """The configured planner's chunk count (1 = it would render sequentially)."""
    from ..request import Settings

    return planned_chunks(
        duration_s, replicas, Settings.from_config(cfg), cost=cost, stream=stream
    )[0]


# --- parameters as the CLI and the notebooks pass them -----------------------------------
def parse_list(text: str | None, cast: Callable[[str], Any], what: str) -> list[Any] | None:
    """A comma list from the command line (None stays None)."""
    if text is None:
        return None
    try:
        items = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"cannot read {what} from {text!r}", "give a comma list, e.g. 5,10,20") from None  # fmt: skip
    if not items:
        raise InputError(f"no {what} in {text!r}", "give a comma list, e.g. 5,10,20")
    return items


def as_list(value: Any, cast: Callable[[Any], Any] = lambda x: x) -> list[Any] | None:
    """A notebook parameter as a list: None stays None, a list stays, a scalar becomes [x],
    a string is YAML ("[5, 10]") or a comma list ("5,10")."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = yaml.safe_load(text)
        else:
            value = [t.strip() for t in text.split(",") if t.strip()]
    if not isinstance(value, list | tuple):
        value = [value]
    return [cast(v) for v in value]


def as_model_sets(value: Any) -> list[list[str]] | None:
    """Model sets: [["gan", "nogan"]], ["gan", "nogan"] (one set), or "gan+nogan;gan+gan"."""
    if value is None:
        return None
    if isinstance(value, str) and not value.strip().startswith("["):
        return [[m for m in part.replace(",", "+").split("+") if m] for part in value.split(";")]
    sets = as_list(value) or []
    if sets and all(isinstance(m, str) for m in sets):
        return [list(sets)]
    return [as_list(ms, str) or [] for ms in sets]
