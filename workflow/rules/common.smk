"""Tables and input functions only: the job table (resolved by lipbench.jobs), how rules call
the lipbench CLI, path helpers. Nothing here writes a file or changes the environment."""

import json
import re
import shlex
import sys
from importlib.util import find_spec
from pathlib import Path

from snakemake.exceptions import WorkflowError

from lipbench import tts
from lipbench.errors import LipbenchError
from lipbench.jobs import JobSettings, has_nvidia_driver, resolve_job, uses_gpu

REPO = Path(workflow.basedir)
RESULTS = config["results_dir"]


def res(path: str) -> str:
    """A path under the results folder (config `results_dir`, relative to the working dir)."""
    return f"{RESULTS}/{path}"


def repo_fallback(path: str) -> str:
    """A relative input path (weights dir, avatar) missing from the working directory
    resolves against the repository, so `snakemake -d elsewhere` still finds weights/ etc."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or not (REPO / p).exists():
        return str(p)
    return str(REPO / p)


def avatar_path(avatar: str) -> str:
    return avatar if avatar.strip().lower() == "default" else repo_fallback(avatar)


def normalise_job(raw: dict) -> dict:
    """One config job with every choice made explicit, resolved by lipbench.jobs (the same
    function the CLI, the pipeline, the bench and the server use)."""
    try:
        job = resolve_job(JOB_SETTINGS, raw["strategy"], raw.get("models"), raw.get("chunks"))
        engine = raw["engine"] if raw["engine"] != "auto" else config["tts"]["engine"]
        suffix = tts.output_suffix(engine)
    except LipbenchError as exc:
        raise WorkflowError(f"job {raw['id']}: {exc}") from None
    return {
        "id": raw["id"],
        "text": raw["text"],
        "lang": raw["lang"],
        "engine": engine,
        "suffix": suffix,
        "avatar": avatar_path(raw["avatar"]),
        "job": job,
        "strategy": job.strategy,
        "models": list(job.models),
        "chunks": job.chunks,
    }


def job_table() -> dict[str, dict]:
    jobs: dict[str, dict] = {}
    for raw in config["jobs"]:
        if raw["id"] in jobs:
            raise WorkflowError(f"job id {raw['id']!r} appears twice in config['jobs']")
        jobs[raw["id"]] = normalise_job(raw)
    return jobs


def id_regex(ids) -> str:
    """A wildcard constraint matching exactly these job ids (or nothing when empty)."""
    ids = sorted(ids)
    return "|".join(re.escape(i) for i in ids) if ids else "(?!)"


def lipbench_command() -> str:
    """How rules call the CLI: the interpreter running this Snakemake (it imports lipbench)."""
    return f"{shlex.quote(sys.executable)} -m lipbench.cli"


def python_tool(module: str) -> str:
    """`<this python> -m <module>` when importable here, else the command of that name."""
    if find_spec(module) is not None:
        return f"{shlex.quote(sys.executable)} -m {module}"
    return module


def settings(*keys: str) -> str:
    """Config sections as one canonical JSON string. A rule passes it as a param AND to the
    CLI (`--config-json`), so Snakemake's params rerun trigger watches exactly the settings
    the step sees: a changed setting re-runs just the steps that use it."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def chunk_threads(wildcards) -> int:
    """Torch threads per chunk job: what the replica pool gives the replicas of this job's
    plan (lipbench.jobs; a one-chunk parallel plan renders on one replica with every core);
    Snakemake caps it at --cores, Slurm gets it as --cpus-per-task."""
    job = JOBS[wildcards.job]["job"]
    return job.threads_per_replica(JOB_SETTINGS, plan_of(wildcards.job)["n_chunks"])


def plan_of(job: str) -> dict:
    """The job's plan, once its `plan` checkpoint has run: reading it through `checkpoints`
    makes Snakemake re-evaluate the DAG after the checkpoint."""
    path = checkpoints.plan.get(job=job).output.plan
    return json.loads(Path(path).read_text(encoding="utf-8"))


def chunk_list(job: str, pattern: str) -> list[str]:
    """One file per chunk of `job`, in chunk order; `pattern` gets the job and index k."""
    return [res(pattern.format(job=job, k=k)) for k in range(plan_of(job)["n_chunks"])]


def chunk_files(pattern: str):
    """Input function: every chunk's file of one kind (one function per kind, so each is a
    named input of its own)."""
    return lambda wildcards: chunk_list(wildcards.job, pattern)


def job_chunks(job: str):
    """Input function for `all`: one job's chunk videos. Requesting them (not only the
    result) makes a deleted chunk a missing target, so a rerun rebuilds it and the merge."""
    return lambda wildcards: chunk_list(job, "{job}/chunks/{k}.mp4")


def chunk_model(wildcards) -> str:
    return plan_of(wildcards.job)["chunks"][int(wildcards.k)]["model"]


def chunk_weights(wildcards) -> list[str]:
    """The chunk's checkpoint file when present (none: seeded-random weights), so adding a
    real checkpoint later re-renders the chunks made without it."""
    name = config["weights"]["files"].get(chunk_model(wildcards))
    path = Path(config["weights"]["dir"]) / name if name else None
    return [str(path)] if path and path.is_file() else []


def avatar_input(wildcards) -> list[str]:
    avatar = JOBS[wildcards.job]["avatar"]
    return [] if avatar == "default" else [avatar]


config["weights"]["dir"] = repo_fallback(config["weights"]["dir"])
config["face"]["avatar"] = avatar_path(config["face"]["avatar"])
JOB_SETTINGS = JobSettings.from_config(config)
JOBS = job_table()
LIPBENCH = lipbench_command()
PAPERMILL = python_tool("papermill")
NBCONVERT = python_tool("nbconvert")
# `--use-conda` runs each step in the project's own environment.yml (relative to this folder).
ENV = "../../environment.yml"


wildcard_constraints:
    job=id_regex(JOBS),
    k=r"\d+",
