"""README.md and docs/ say what the code and the files say: the module table matches
src/lipbench, links resolve, every figure names its command, host and date, and the run.json
glossary covers every field of lipbench.record. Reads files only: no rendering."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lipbench import docs_glossary

# the checkout: the nearest folder above this file with a pyproject.toml (tests/ may nest)
REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = REPO / "README.md"
DOCS = REPO / "docs"
PACKAGE = REPO / "src" / "lipbench"
MAX_README_LINES = 150

DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
HOST = re.compile(r"\bhost [A-Z]\b|EPYC|Xeon|Intel|AMD")
COMMAND = re.compile(
    r"`(?:\.venv/bin/)?(?:lipbench|make|pytest|python|snakemake|wb\.generate)\b[^`]*`"
)
# a measured figure: a number with a unit of speed, quality, ratio or time
FIGURE = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:frames/s|dB\b|×|ms\b|min\b|s\b)")
# ... outside docs/results.md only these count (elsewhere "30 s" or "0.5 s" are settings)
FIGURE_ELSEWHERE = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:frames/s|×)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def strip_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for every heading of any level; the text before the first is ''."""
    out: list[tuple[str, str]] = []
    heading, body = "", []
    for line in strip_code_blocks(text).splitlines():
        if re.match(r"#{1,6} ", line):
            out.append((heading, "\n".join(body)))
            heading, body = line, []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"^#+ ", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def module_table_names(text: str) -> list[str]:
    """The backticked names in the first column of the README's module table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*module\b", line))
    names = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        names += re.findall(r"`([^`]+)`", first)
    return names


def package_modules() -> set[str]:
    """Every module of src/lipbench: `name` for a .py file, `name/` for a package."""
    out = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    out |= {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return out


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines (≤ {MAX_README_LINES}): move details to docs/"
    )


def test_readme_states_no_test_count() -> None:
    # a count goes stale with every new test; if one is ever stated, check it here instead
    found = re.findall(r"\b\d[\d,]*\s+(?:tests|test cases)\b", README.read_text(encoding="utf-8"))
    assert not found, (
        f"README.md states a test count {found}: drop it, or add a test that checks it"
    )


def test_module_table_lists_exactly_the_modules() -> None:
    listed = module_table_names(README.read_text(encoding="utf-8"))
    modules = package_modules()
    missing = sorted(modules - set(listed))
    extra = []
    for name in listed:
        if name in modules:
            continue
        path = PACKAGE / name.rstrip("/")
        # data beside the modules (schema.yaml, static/) may be named when it exists
        if not path.exists() or (path.is_dir() and (path / "__init__.py").exists()):
            extra.append(name)
        elif path.suffix == ".py":
            extra.append(name)
    duplicated = sorted({n for n in listed if listed.count(n) > 1})
    problems = []
    if missing:
        problems.append("rows missing for " + ", ".join(f"`{m}`" for m in missing))
    if extra:
        problems.append("rows for modules that do not exist: " + ", ".join(f"`{e}`" for e in extra))
    if duplicated:
        problems.append("listed twice: " + ", ".join(f"`{d}`" for d in duplicated))
    assert not problems, "README.md module table vs src/lipbench: " + "; ".join(problems)


def test_internal_links_resolve() -> None:
    broken = []
    for doc in doc_files():
        for target in LINK.findall(strip_code_blocks(doc.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path_part, _, anchor = target.partition("#")
            path = (doc.parent / path_part).resolve() if path_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md":
                anchors = {slug(h) for h, _ in sections(path.read_text(encoding="utf-8")) if h}
                if anchor not in anchors:
                    broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_figure_names_command_host_and_date() -> None:
    missing = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        figure = FIGURE if doc.name == "results.md" else FIGURE_ELSEWHERE
        for heading, body in sections(text):
            has_image = re.search(r"!\[[^\]]*\]\(", body)
            if not (figure.search(body) or has_image):
                continue
            lacks = [
                what
                for what, rx in (("a date", DATE), ("a host", HOST), ("a command", COMMAND))
                if not rx.search(heading + "\n" + body)
            ]
            if lacks:
                missing.append(f"{doc.name} {heading or '(top)'}: no {', no '.join(lacks)}")
    assert not missing, "figures without their command, host and date:\n" + "\n".join(missing)


def test_readme_results_rows_name_command_host_and_date() -> None:
    text = README.read_text(encoding="utf-8")
    body = dict(sections(text))["## Results"]
    rows = [line for line in body.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert rows, "README.md: the results table is gone"
    bad = [r for r in rows if not (DATE.search(r) and COMMAND.search(r) and HOST.search(r))]
    assert not bad, "README.md results rows without a command, host or date:\n" + "\n".join(bad)


def test_every_image_in_docs_is_used() -> None:
    used = set()
    for doc in doc_files():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            used.add((doc.parent / target.partition("#")[0]).resolve())
    images = [p for ext in ("png", "svg", "jpg") for p in DOCS.glob(f"*.{ext}")]
    unused = [p.name for p in images if p.resolve() not in used]
    assert not unused, f"images in docs/ that no page shows (remove them or show them): {unused}"


def test_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    named = set()
    for doc in doc_files():
        named |= set(re.findall(r"\bmake ([a-z][\w-]*)", doc.read_text(encoding="utf-8")))
    missing = sorted(named - targets)
    assert not missing, f"`make` targets named in the docs but not in the Makefile: {missing}"


def test_run_json_glossary_covers_every_field() -> None:
    problems = docs_glossary.problems((DOCS / "run-json.md").read_text(encoding="utf-8"))
    assert not problems, (
        "docs/run-json.md vs lipbench.record (run `python -m lipbench.docs_glossary --write`, "
        "then describe each TODO):\n" + "\n".join(problems)
    )


@dataclasses.dataclass
class _Inner:
    a: int
    b: float | None = None


@dataclasses.dataclass
class _Root:
    name: str
    inner: _Inner
    rows: list[_Inner]
    by_key: dict[str, _Inner]


def test_glossary_finds_nested_records() -> None:
    found = {s.name: s.places for s in docs_glossary.sections(_Root)}
    assert found == {"_Root": [""], "_Inner": ["inner", "rows[]", "by_key.<key>"]}
    assert "rows[].b" in docs_glossary.field_paths(_Root)
    assert "timings.first_frame_s" in docs_glossary.field_paths()  # the real record


def test_glossary_write_keeps_meanings() -> None:
    start = "# glossary\n\nintro\n"
    skeleton = docs_glossary.render(start, _Root)
    assert skeleton.startswith(start)
    problems = docs_glossary.problems(skeleton, _Root)
    assert "_Inner.b: meaning still TODO" in problems and len(problems) == 6
    described = skeleton.replace("TODO: describe", "said")
    assert docs_glossary.problems(described, _Root) == []
    assert docs_glossary.render(described, _Root) == described  # stable
    # a removed field, a new one and a changed type are each named; --write fixes all but
    # the new field's meaning
    changed = described.replace("| `a` | `int` |", "| `a` | `str` |").replace(
        "| `b` |", "| `gone` |"
    )
    assert docs_glossary.problems(changed, _Root) == [
        "_Inner.a: the row says `str`, record.py `int`",
        "_Inner.b: no row (type `float | None`)",
        "_Inner.gone: a row, but no such field",
    ]
    assert docs_glossary.problems(docs_glossary.render(changed, _Root), _Root) == [
        "_Inner.b: meaning still TODO"
    ]
