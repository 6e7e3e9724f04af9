"""A run's output files, named once from ``--out``, and the all-or-nothing transaction that
publishes them: a run writes into a hidden staging folder beside ``--out`` and moves its
files into place only after the video is verified.

Used by the pipeline (CLI, server, bench) for every ``generate`` run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import InputError

STREAM_DIR = "stream"  # side folder of a streamed run: segments + playlist
PLAYLIST = "index.m3u8"  # the HLS playlist's name inside it


@dataclass(frozen=True)
class OutputNames:
    """Every file a ``generate`` run may create or replace, all derived from ``--out``:
    ``x.mp4``, ``x.run.json`` and the side files under ``x.files/``. A run touches nothing
    else, so two runs into one folder never clobber each other."""

    video: Path
    record: Path
    side: Path  # folder of side files: speech, audio.wav, plan.json, chunks/, stream/

    @property
    def speech_stem(self) -> Path:
        return self.side / "speech"

    @property
    def audio(self) -> Path:
        return self.side / "audio.wav"

    @property
    def plan(self) -> Path:
        return self.side / "plan.json"

    @property
    def chunks(self) -> Path:
        return self.side / "chunks"

    @property
    def stream(self) -> Path:
        return self.side / STREAM_DIR

    @property
    def playlist(self) -> Path:
        return self.stream / PLAYLIST

    def all(self) -> list[Path]:
        return [self.video, self.record, self.side]


def output_names(out: str | os.PathLike) -> OutputNames:
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(
            f"--out must end in .mp4 (got {out})", "e.g. --out results/demo/result.mp4"
        )
    stem = out.with_suffix("")
    return OutputNames(
        video=out,
        record=stem.with_name(stem.name + ".run.json"),
        side=stem.with_name(stem.name + ".files"),
    )


def _same_file(a: Path, b: Path) -> bool:
    """The same file on disk (a hard link, another spelling, a case-insensitive name) or the
    same path where neither exists yet."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_input_as_output(inputs: list[str | os.PathLike | None], outputs: list[str | os.PathLike],
                           flag: str = "the output") -> None:  # fmt: skip
    """A step command whose output is one of its inputs (the same file, however named)
    would replace the user's file: refused before any work."""
    for given in inputs:
        if given is None:
            continue
        for out in outputs:
            if _same_file(Path(given), Path(out)):
                raise InputError(
                    f"{flag} {out} is the input {given}: it would be overwritten",
                    "write the result to another file",
                )


def refuse_overwriting_input(names: OutputNames, inputs: list[str | os.PathLike | None]) -> None:
    """An output path that is (or holds) an input file would destroy the user's file."""
    outs = [p.resolve() for p in names.all()]
    for given in inputs:
        if given is None or str(given).lower() == "default":
            continue
        p = Path(given).resolve()
        if any(_same_file(p, o) or o in p.parents for o in outs):
            raise InputError(
                f"--out {names.video} would overwrite the input {given}",
                "pick another --out (outputs are <out>.mp4, <out>.run.json and <out>.files/)",
            )


def check_destination(final: OutputNames) -> None:
    """Refused before any work: an ``--out`` that is a folder, one whose side names clash
    (by case only) with another run's, or one inside another run's side folder."""
    if final.video.is_dir():
        raise InputError(
            f"--out {final.video} is an existing folder", "give a file name ending in .mp4"
        )
    for parent in final.video.resolve().parents:
        if (
            parent.name.endswith(".files")
            and parent.with_name(parent.name[:-6] + ".run.json").exists()
        ):
            raise InputError(
                f"--out {final.video} is inside another run's side folder {parent}",
                "pick an --out outside any <name>.files/ folder",
            )
    folder = final.video.parent
    if folder.is_dir():
        mine = {p.name for p in final.all()}
        for entry in folder.iterdir():
            if entry.name not in mine and entry.name.lower() in {m.lower() for m in mine}:
                raise InputError(
                    f"--out {final.video}: {entry} differs from this run's {entry.name.lower()} "
                    "only by case (another run's file)",
                    "pick an --out whose name differs from other runs' by more than case",
                )


# x264 at the default quality takes ~0.05 bytes a pixel on talking heads (measured: 12 KB a
# 512×512 frame); a run holds its chunks, the merged video and maybe stream segments at once
BYTES_PER_PIXEL = 0.1
COPIES = 3
MARGIN_BYTES = 20 * 2**20


def check_free_space(folder: Path, frames: int, width: int, height: int) -> None:
    """Refuse a run whose output would not fit on its disk, before rendering (a full disk
    found at the end of a long chunk wastes the whole render)."""
    need = int(frames * width * height * BYTES_PER_PIXEL * COPIES) + MARGIN_BYTES
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(
            f"not enough free space in {folder}: {free / 2**20:.0f} MB free, about {need / 2**20:.0f} MB needed",
            "free some space or pick an --out on another disk",
        )


def remove_stale_staging(final: OutputNames) -> None:
    """A run killed with SIGKILL leaves its staging folder behind (never a published file),
    and a streamed CLI run leaves its live playlist's folder (see ``Staging``): the next run
    for the same --out removes those whose process is gone."""
    for d in final.video.parent.glob(f".{final.video.stem}.staging-*"):
        pid = d.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _publish(stage: OutputNames, final: OutputNames, keep_stream: bool) -> None:
    """Move a finished run's files into place: side files first, the record last, so an
    interrupted run leaves the previous result complete. ``keep_stream``: the staging
    stream folder stays where it is (the final one gets hard links to the same files), so a
    player still reading the live playlist's path reads the finished stream to its end."""
    source = stage.side
    if keep_stream and stage.stream.is_dir():
        source = stage.side.with_name(f".publish-{uuid.uuid4().hex[:6]}")
        source.mkdir()
        for item in stage.side.iterdir():
            if item.name != STREAM_DIR:
                item.rename(source / item.name)
        shutil.copytree(stage.stream, source / STREAM_DIR, copy_function=os.link)
    if final.side.exists():
        trash = final.side.with_name(f".{final.side.name}.old-{uuid.uuid4().hex[:6]}")
        final.side.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    source.rename(final.side)
    os.replace(stage.video, final.video)
    os.replace(stage.record, final.record)


@dataclass
class Staging:
    """One run's output transaction: ``stage`` names the files being written."""

    final: OutputNames
    folder: Path
    stage: OutputNames
    keep_stream: bool = False  # keep the live playlist's path valid after publishing
    published: bool = False

    def publish(self) -> None:
        _publish(self.stage, self.final, self.keep_stream)
        self.published = True


@contextmanager
def staging(final: OutputNames, keep_stream: bool = False) -> Iterator[Staging]:
    """Create the staging folder; remove it at the end, except a published run's live
    stream folder when ``keep_stream`` (the next run for the same --out removes it)."""
    final.video.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    folder = (
        final.video.parent / f".{final.video.stem}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    stage = output_names(folder / final.video.name)
    stage.side.mkdir(parents=True)
    s = Staging(final, folder, stage, keep_stream)
    try:
        yield s
    finally:
        if not (keep_stream and s.published and stage.stream.is_dir()):
            shutil.rmtree(folder, ignore_errors=True)
