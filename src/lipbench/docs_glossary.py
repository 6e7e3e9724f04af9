"""The run.json glossary (docs/run-json.md) kept in step with ``lipbench.record``.

Every dataclass reachable from ``RunRecord`` gets a section ``## Name — `where` `` with one
table row per field: ``| `field` | `type` | meaning |``. The names, types and places come
from record.py; only the meanings (and any prose under a heading) are written by hand.

    python -m lipbench.docs_glossary            # list what is missing or stale; exit 1 if any
    python -m lipbench.docs_glossary --write    # rewrite the file: new rows say TODO
    python -m lipbench.docs_glossary --list     # every field path of a run.json

tests/test_docs.py fails while a field has no row, a row has no field, a type differs, or a
meaning is still TODO.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from pathlib import Path

from . import record

DOC = Path("docs/run-json.md")
TODO = "TODO: describe"
HEAD = "| field | type | meaning |\n| --- | --- | --- |"
_SECTION = re.compile(r"^## (\w+) — ")
_CELLS = re.compile(r"(?<!\\)\|")


@dataclasses.dataclass
class Section:
    name: str
    places: list[str]
    fields: list[tuple[str, str]]  # (field, type as written in record.py)


def sections(root: type = record.RunRecord) -> list[Section]:
    """Every dataclass reachable from ``root``, depth first in field order (a nested record
    right after the first one that holds it), with the places it occurs in a run.json
    (``chunks[]``, ``weights.<key>``, …)."""
    found: dict[type, Section] = {}

    def visit(cls: type, place: str) -> None:
        if cls in found:
            found[cls].places.append(place)
            return
        fields = dataclasses.fields(cls)
        found[cls] = Section(cls.__name__, [place], [(f.name, str(f.type)) for f in fields])
        hints = typing.get_type_hints(cls)
        for f in fields:
            for sub, suffix in _dataclasses_in(hints[f.name]):
                visit(sub, f"{place}.{f.name}{suffix}".lstrip("."))

    visit(root, "")
    return list(found.values())


def _dataclasses_in(hint: object, suffix: str = "") -> list[tuple[type, str]]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [(hint, suffix)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return _dataclasses_in(args[0], suffix + "[]")
    if origin is dict:
        return _dataclasses_in(args[1], suffix + ".<key>")
    if origin in (typing.Union, types.UnionType):
        return [x for a in args for x in _dataclasses_in(a, suffix)]
    return []


def field_paths(root: type = record.RunRecord) -> list[str]:
    """Every leaf or nested field as a dotted path, e.g. ``replicas[].weights.sha256``."""
    by_name = {s.name: s for s in sections(root)}
    out = []
    for s in by_name.values():
        for place in s.places:
            for name, _ in s.fields:
                out.append(f"{place}.{name}".lstrip("."))
    return sorted(out)


def _where(s: Section) -> str:
    return ", ".join(f"`{p}`" if p else "the whole file" for p in s.places)


def _esc(text: str) -> str:
    return text.replace("|", "\\|")


def parse(text: str) -> tuple[str, dict[str, tuple[list[str], dict[str, tuple[str, str]]]], str]:
    """(preamble, {class: (prose lines, {field: (type, meaning)})}, other sections)."""
    preamble: list[str] = []
    classes: dict[str, tuple[list[str], dict[str, tuple[str, str]]]] = {}
    other: list[str] = []
    current: tuple[list[str], dict[str, tuple[str, str]]] | None = None
    target = preamble
    for line in text.splitlines():
        if line.startswith("## "):
            m = _SECTION.match(line)
            if m:
                current = ([], {})
                classes[m.group(1)] = current
            else:
                current = None
                target = other
        if current is None:
            target.append(line)
            continue
        if line.startswith("## "):
            continue
        cells = [c.strip() for c in _CELLS.split(line.strip())]
        if line.startswith("|") and len(cells) >= 5 and re.fullmatch(r"`\w+`", cells[1]):
            name, typ = cells[1].strip("`"), cells[2].strip("`").replace("\\|", "|")
            current[1][name] = (typ, " | ".join(cells[3:-1]))
        elif line.startswith("|"):
            continue  # the table's header
        else:
            current[0].append(line)
    return "\n".join(preamble).rstrip() + "\n", classes, "\n".join(other).rstrip()


def render(text: str, root: type = record.RunRecord) -> str:
    """The glossary with record.py's classes, fields and types, keeping hand-written
    meanings and prose; new fields say TODO."""
    preamble, classes, other = parse(text)
    parts = [preamble]
    for s in sections(root):
        prose, rows = classes.get(s.name, ([], {}))
        lines = [f"## {s.name} — {_where(s)}", ""]
        body = "\n".join(prose).strip()
        if body:
            lines += [body, ""]
        lines.append(HEAD)
        for name, typ in s.fields:
            meaning = rows.get(name, ("", TODO))[1] or TODO
            lines.append(f"| `{name}` | `{_esc(typ)}` | {meaning} |")
        parts.append("\n".join(lines) + "\n")
    if other:
        parts.append(other + "\n")
    return "\n".join(parts)


def problems(text: str, root: type = record.RunRecord) -> list[str]:
    """What differs between the glossary and record.py, one line each."""
    _, classes, _ = parse(text)
    out = []
    known = sections(root)
    for s in known:
        if s.name not in classes:
            out.append(f"no section for {s.name} ({_where(s)}): add `## {s.name} — {_where(s)}`")
            continue
        rows = classes[s.name][1]
        names = [n for n, _ in s.fields]
        for name, typ in s.fields:
            if name not in rows:
                out.append(f"{s.name}.{name}: no row (type `{typ}`)")
            elif rows[name][0] != typ:
                out.append(f"{s.name}.{name}: the row says `{rows[name][0]}`, record.py `{typ}`")
            elif rows[name][1] in ("", TODO):
                out.append(f"{s.name}.{name}: meaning still TODO")
        out += [f"{s.name}.{n}: a row, but no such field" for n in rows if n not in names]
    names = {s.name for s in known}
    out += [
        f"section {n}: no such class reachable from RunRecord" for n in classes if n not in names
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lipbench.docs_glossary", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--doc", type=Path, default=DOC, help="the glossary (default: %(default)s)")
    ap.add_argument(
        "--write", action="store_true", help="rewrite it from record.py (new rows: TODO)"
    )
    ap.add_argument("--list", action="store_true", help="print every field path of a run.json")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(field_paths()))
        return 0
    text = args.doc.read_text(encoding="utf-8") if args.doc.exists() else "# run.json\n"
    if args.write:
        args.doc.write_text(render(text), encoding="utf-8")
        text = args.doc.read_text(encoding="utf-8")
    found = problems(text)
    for line in found:
        print(f"{args.doc}: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
