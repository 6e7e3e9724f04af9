#!/usr/bin/env bash
# Where and when a workflow step ran, as one line of JSON on stdout:
#   job_info.sh STEP_START_TS
# STEP_START_TS is when the step's shell began (`date +%s.%N`); the end is now. Under SLURM
# the job's submit and start times come from squeue (which works without accounting), so the
# merge can tell the time a chunk waited in the queue from the time it ran:
#   queue wait = slurm_start_ts - submit_ts, step start-up = step_start_ts - slurm_start_ts
# (Snakemake's own job start on the node), then the chunk's own start_ts/end_ts stamps.
# Outside SLURM the slurm_* fields are null. SLURM prints whole seconds in local time.
set -euo pipefail
step_start=${1:?usage: job_info.sh STEP_START_TS}
step_end=$(date +%s.%N)
job=null submit=null start=null
epoch() { date -d "$1" +%s 2>/dev/null || echo null; }
if [ -n "${SLURM_JOB_ID:-}" ]; then
  job=$SLURM_JOB_ID
  if command -v squeue >/dev/null 2>&1; then
    times=$(squeue -h -j "$SLURM_JOB_ID" -o '%V|%S' 2>/dev/null | head -1 || true)
    if [[ $times == *'|'* ]]; then
      submit=$(epoch "${times%%|*}")
      start=$(epoch "${times##*|}")
    fi
  fi
fi
printf '{"host": "%s", "slurm_job_id": %s, "submit_ts": %s, "slurm_start_ts": %s, "step_start_ts": %s, "step_end_ts": %s}\n' \
  "$(hostname)" "$job" "$submit" "$start" "$step_start" "$step_end"
