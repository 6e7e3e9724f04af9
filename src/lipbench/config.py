"""Typed access to config/config.yaml, validated (and filled with defaults) by the same JSON
Schema that the Snakemake workflow validates with (src/lipbench/schema.yaml, linked as
config/schema.yaml)."""

from __future__ import annotations

import copy
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# jsonschema imports every optional format checker it finds; rfc3987_syntax builds a parser
# at import (1–6 s on this machine kind). The schema uses no "format" keyword, so keep that
# module out unless something else already loaded it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
import jsonschema  # noqa: E402

from .errors import InputError  # noqa: E402

SCHEMA_RESOURCE = "schema.yaml"
ENV_CONFIG = "LIPBENCH_CONFIG"


def load_schema() -> dict[str, Any]:
    text = resources.files("lipbench").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in each property's ``default`` (as Snakemake's
    ``validate(..., set_default=True)`` does), so library and workflow see the same config."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate(config: dict[str, Any], source: str = "config/config.yaml") -> dict[str, Any]:
    """Validate ``config`` in place against the schema, filling defaults; return it.
    ``source`` names where the values came from, for the error's fix."""
    schema = load_schema()
    # Two passes: the first fills nested defaults (e.g. {} for a section), the second fills
    # the keys inside those freshly created sections.
    for _ in range(2):
        errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
            raise InputError(
                f"invalid configuration at {where}: {err.message}",
                f"fix that key in {source} (config/schema.yaml lists every key)",
            )
    return config


def default_config_path() -> Path | None:
    """$LIPBENCH_CONFIG, else ./config/config.yaml when run from a checkout, else None."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    local = Path.cwd() / "config" / "config.yaml"
    return local if local.exists() else None


def load_config(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    read_default: bool = True,
) -> dict[str, Any]:
    """Load a YAML config (or the default one, unless ``read_default`` is False), merge
    ``overrides`` over it, validate, fill defaults. With no file at all, the schema's
    defaults alone make a working config."""
    cfg: dict[str, Any] = {}
    cfg_path = Path(path) if path else (default_config_path() if read_default else None)
    if cfg_path is not None:
        if not cfg_path.exists():
            raise InputError(f"config file not found: {cfg_path}", "pass an existing --config file")
        try:
            cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(
                f"config file {cfg_path} is not valid YAML: {exc}", "fix its syntax"
            ) from exc
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg, str(cfg_path) if cfg_path else "the config")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _may_have_cuda() -> bool:
    """False when torch certainly sees no GPU: a CPU-only torch build (version ``+cpu``) or
    no NVIDIA driver on the machine (no /proc/driver/nvidia, no /dev/nvidiactl)."""
    from importlib import metadata

    try:
        if metadata.version("torch").endswith("+cpu"):
            return False
    except metadata.PackageNotFoundError:
        return False
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def resolve_device(asked: str | dict[str, Any]) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu' (``asked``: the device, or a config)."""
    device = asked if isinstance(asked, str) else asked.get("device", "auto")
    if device == "auto":
        if not _may_have_cuda():  # decided without importing torch (≈ 1.2 s, ≈ 300 MB)
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError(
                "device 'cuda' was asked for but torch sees no GPU", "set device: auto or cpu"
            )
    return device
