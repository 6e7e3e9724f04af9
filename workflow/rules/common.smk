"""Shared helpers: the normalised job table, how to call the lipbench CLI, path helpers."""

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

REPO = Path(workflow.basedir)
RESULTS = config["results_dir"]
TTS_ENGINES = ("auto", "piper", "espeak", "gtts")
HEADER = "# Written by the Snakefile: the validated config its rules pass to `lipbench --config`.\n"


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
    """One config job with every choice made explicit (engine, models, chunks, suffix)."""
    strategy = raw["strategy"]
    engine = raw["engine"] if raw["engine"] != "auto" else config["tts"]["engine"]
    if engine not in TTS_ENGINES:
        raise WorkflowError(
            f"job {raw['id']}: unknown TTS engine {engine!r}; use one of {', '.join(TTS_ENGINES)}"
        )
    if strategy == "parallel":
        models = raw.get("models") or config["parallel"]["models"]
        chunks = raw.get("chunks")  # None: the config's plan policy decides
    else:
        models = (raw.get("models") or [config["sequential"]["model"]])[:1]
        chunks = 1
    return {
        "id": raw["id"],
        "text": raw["text"],
        "lang": raw["lang"],
        "engine": engine,
        # gTTS returns MP3; the offline engines write WAV (lipbench.tts.output_suffix)
        "suffix": ".mp3" if engine == "gtts" else ".wav",
        "avatar": avatar_path(raw["avatar"]),
        "strategy": strategy,
        "models": list(models),
        "chunks": chunks,
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
    """How rules call the CLI: this interpreter when it has lipbench (a `make setup` venv,
    activated or not), else `lipbench` from PATH."""
    if find_spec("lipbench") is not None:
        return f"{shlex.quote(sys.executable)} -m lipbench.cli"
    exe = shutil.which("lipbench")
    if exe is None:
        raise WorkflowError(
            "the lipbench package is not importable by this Snakemake and `lipbench` is not on "
            "PATH; run `make setup` and use .venv/bin/snakemake (or activate that venv)"
        )
    return shlex.quote(exe)


def python_tool(module: str) -> str:
    """`<this python> -m <module>` when importable here, else the command of that name."""
    if find_spec(module) is not None:
        return f"{shlex.quote(sys.executable)} -m {module}"
    return module


def effective_config_file() -> str:
    """The validated config (defaults filled, relative input paths resolved, jobs left out:
    rules pass each job's choices as flags) as a file for `lipbench --config`, named by its
    content hash: never rewritten, so runs with different configs cannot disturb each other,
    and cluster jobs that parse the workflow again find the very same file."""
    body = {k: v for k, v in config.items() if k != "jobs"}
    text = HEADER + yaml.safe_dump(body, sort_keys=True, allow_unicode=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(res(f".workflow/config-{digest}.yaml")).resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return str(path)


def settings(*keys: str) -> str:
    """Config sections as one canonical string: used as `params`, so that Snakemake's params
    rerun trigger re-runs exactly the steps whose settings changed."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def uses_gpu() -> bool:
    """Whether chunk jobs take a GPU: device cuda, or auto with an NVIDIA driver installed
    (nvidia-smi on PATH; importing torch here would slow every parse of the workflow)."""
    device = config["device"]
    if device != "auto":
        return device == "cuda"
    return shutil.which("nvidia-smi") is not None


def chunk_threads(wildcards) -> int:
    """Torch threads per chunk job, as the replica pool chooses them (pipeline.default_threads):
    parallel jobs split the cores between their models; Snakemake caps this at --cores."""
    job = JOBS[wildcards.job]
    cores = os.cpu_count() or 1
    if job["strategy"] == "sequential":
        return config["render"]["threads"] or cores
    return config["parallel"]["threads_per_replica"] or max(1, cores // len(job["models"]))


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
JOBS = job_table()
# Every step runs `lipbench --config "$LIPBENCH_CONFIG"`. The file's name carries a hash, so
# it stays out of params: a new name would re-run every step, while each step's `settings`
# param re-runs just the steps whose settings changed.
os.environ["LIPBENCH_CONFIG"] = effective_config_file()
LIPBENCH = f'{lipbench_command()} --config "$LIPBENCH_CONFIG"'
PAPERMILL = python_tool("papermill")
NBCONVERT = python_tool("nbconvert")
# `--use-conda` runs each step in the project's own environment.yml (relative to this folder).
ENV = "../../environment.yml"
GPU = 1 if uses_gpu() else 0


envvars:
    "LIPBENCH_CONFIG",


wildcard_constraints:
    job=id_regex(JOBS),
    k=r"\d+",
