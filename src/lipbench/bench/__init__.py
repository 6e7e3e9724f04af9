"""`lipbench bench`: when does parallel beat sequential here, and by how much — measured in
ONE process on warm replica pools, in pairs, with intervals, on a quiet machine only.

Modules (each one job; none imports this package's ``__init__``):

- ``grid``: comparisons and the protocol's knobs (the config's ``sweep`` section);
- ``speech``: speech of an exact duration, noise clips;
- ``contamination``: did other processes take the machine during a run (/proc/stat);
- ``stats``: paired speed-ups, bootstrap interval of the median, when to stop;
- ``costmodel``: frames/s per thread count and per replica count → predicted speed-up and
  the report's explanation (``measured_cost.MeasuredCost`` holds the model);
- ``results`` / ``outputs``: what was measured, and the files it is written to;
- ``runner``: warm-up, pairs, re-runs, the cost model — ``run_bench``, ``run_sweep``
  (imported from ``lipbench.bench.runner``: it starts torch, this package does not);
- ``summary``: tables and text shared by the CLI and the report (speed-ups; latency — first
  playable frame and stall — beside throughput);
- ``notebook``: the notebooks' helpers; ``speed`` / ``speed_suite``: ``--suite speed``.
"""

from .grid import Comparison, Grid, RunConfig, comparisons
from .results import COLUMNS, PAIR_COLUMNS, STAGES, BenchResult, load_runs, sidecar_paths
from .summary import decision_table, format_report, latency_table, latency_text, summarize

__all__ = [
    "COLUMNS",
    "PAIR_COLUMNS",
    "STAGES",
    "BenchResult",
    "Comparison",
    "Grid",
    "RunConfig",
    "comparisons",
    "decision_table",
    "format_report",
    "latency_table",
    "latency_text",
    "load_runs",
    "sidecar_paths",
    "summarize",
]
