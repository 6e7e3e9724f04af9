"""The ``face`` section of the configuration as one typed, frozen value.

Its fields are exactly the schema's ``face`` keys (a test checks the two match), so a caller
builds it once with ``FaceSettings(**cfg["face"])``; every value is checked here and bad ones
raise :class:`~lipbench.errors.InputError` naming the config key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lipbench.cachedir import cache_root
from lipbench.errors import InputError
from lipbench.face.fit import MAX_SIDE, check_max_side

DETECTORS = ("yunet", "haar", "s3fd")
SELECTS = ("auto", "largest", "left", "right")
LOOPS = ("pingpong", "repeat")
BLENDS = ("feather", "box")
AUTO_CACHE = "auto"


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    v = str(value).strip().lower()
    if v not in allowed:
        raise InputError(
            f"face.{key} must be one of {', '.join(allowed)}, got {value!r}",
            f"set face.{key} to {allowed[0]} (the default) in the config",
        )
    return v


def resolve_cache_dir(value: str | Path | None) -> Path | None:
    """``auto`` → the user cache (``$LIPBENCH_CACHE/faces``, else ``~/.cache/lipbench/faces``);
    ``none``/empty → no cache; anything else is a folder path."""
    if value is None or str(value).strip().lower() in ("", "none"):
        return None
    if str(value).strip().lower() == AUTO_CACHE:
        return cache_root() / "faces"
    return Path(value).expanduser()


@dataclass(frozen=True)
class FaceSettings:
    """How the avatar's face is found, followed and pasted (config section ``face``)."""

    avatar: str = "default"
    detector: str = "yunet"
    select: str = "auto"
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth_frames: int = 5
    fade_s: float = 0.2
    loop: str = "pingpong"
    blend: str = "feather"
    cache_dir: str = AUTO_CACHE
    max_side: int = MAX_SIDE

    def __post_init__(self) -> None:
        from lipbench.face.boxes import check_pads, check_smooth  # avoids an import cycle

        fix = object.__setattr__
        fix(self, "avatar", str(self.avatar))
        fix(self, "detector", _choice("detector", self.detector, DETECTORS))
        fix(self, "select", _choice("select", self.select, SELECTS))
        fix(self, "loop", _choice("loop", self.loop, LOOPS))
        fix(self, "blend", _choice("blend", self.blend, BLENDS))
        fix(self, "pads", check_pads(self.pads))
        fix(self, "smooth_frames", check_smooth(self.smooth_frames))
        fix(self, "max_side", check_max_side(self.max_side))
        fix(self, "cache_dir", str(self.cache_dir))
        try:
            fade = float(self.fade_s)
        except (TypeError, ValueError):
            fade = -1.0
        if not 0.0 <= fade <= 5.0:
            raise InputError(
                f"face.fade_s must be a number of seconds in [0, 5], got {self.fade_s!r}",
                "use 0.2 (the default), or 0 for no fade",
            )
        fix(self, "fade_s", fade)

    @property
    def cache_path(self) -> Path | None:
        return resolve_cache_dir(self.cache_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for run.json: which detector, loop and blend made the video)."""
        d = asdict(self)
        d["pads"] = list(self.pads)
        return d
