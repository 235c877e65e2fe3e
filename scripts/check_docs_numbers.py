"""Check that every figure README.rst and the docs' results pages quote comes from a results file.

A figure is a number with a unit: dB, s, ms, min, minutes, x (a ratio: ``3.9x``), MB, MiB, GB,
GiB, %, TFLOP, series/s (``5 min 38 s`` is one figure, 338 s; ``1,027 s`` is 1027 s). Each
one must match a value of the figure index in ``benchmarks/README.md`` (at the precision the
document writes it; an unsigned figure may quote a signed value's size), and each value of the
index must equal what its expression computes from its results file, at the precision the
index writes it. So prose cannot drift from the index, nor the index from the results.

The index is the Markdown table whose header starts ``| figure | value | results file |
computed as |``. ``computed as`` is a Python expression over the file: ``rows`` (the records
of a JSONL file), ``data`` (a JSON file), ``col(name, **where)`` (one field of the rows that
match ``where``), ``mean``, ``min``, ``max``, ``len``, ``round``, ``abs``, and ``results(path)``
(another results file, by its path from the repository root: its rows or its data), for a
figure that compares two runs.

Numbers with a unit that are settings or targets, not results (a margin of ``-1 dB``), are
declared in the document itself by a comment line::

    .. check-docs-numbers: not results: -1 dB; 0.1 dB

The pages checked are ``DOCS`` below; it also checks that every results file they and
``docs/history.rst`` name exists.

Usage: ``python scripts/check_docs_numbers.py [--index FILE] [DOC ...]``; exit 1 on any
mismatch, each named with its file and line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    "README.rst",
    "docs/benchmarks.rst",
    "docs/batch.rst",
    "docs/operations.rst",
    "docs/gpu.rst",
    "docs/priors.rst",
)
#: pages whose results files must exist (``tissue_crops/x4-v7.jsonl``, ``archive/...``)
CITING = (*DOCS, "docs/history.rst")
INDEX = "benchmarks/README.md"
RESULTS = ROOT / "benchmarks" / "results"
RESULT_REF = re.compile(r"``((?:benchmarks/results/)?[\w.-]+/[\w./-]+\.jsonl?)``")

UNITS = r"series/s|TFLOP|dB|ms|s|min|minutes|x|MB|MiB|GB|GiB|%"
#: a number (``1,027`` with thousands separators is one) and its unit
NUMBER = r"[+\-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
FIGURE = re.compile(rf"(?<![\w.,+\-−])({NUMBER})\s?({UNITS})(?![\w])")
#: "5 min 38 s" is one figure, 338 s
MIN_SEC = re.compile(r"(?<![\w.])(\d+)\s?min\s(\d+(?:\.\d+)?)\s?s(?![\w])")
NOT_RESULTS = re.compile(r"^\.\.\s+check-docs-numbers:\s*not results:\s*(.*)$")
HEADER = re.compile(r"^\|\s*figure\s*\|\s*value\s*\|\s*results file\s*\|\s*computed as\s*\|")


@dataclass(frozen=True)
class Figure:
    """A number with its unit as written, and where."""

    value: float
    decimals: int
    signed: bool
    unit: str
    where: str

    @classmethod
    def parse(cls, number: str, unit: str, where: str) -> Figure:
        number = number.replace("−", "-").replace(",", "")
        decimals = len(number.split(".")[1]) if "." in number else 0
        return cls(float(number), decimals, number[0] in "+-", unit, where)

    def text(self) -> str:
        sign = "+" if self.signed and self.value >= 0 else ""
        return f"{sign}{self.value:.{self.decimals}f} {self.unit}"

    def matches(self, value: float, unit: str) -> bool:
        """``value`` written at this figure's precision is this figure."""
        if unit != self.unit:
            return False
        tol = 0.5 * 10**-self.decimals + 1e-9
        if not self.signed:
            return abs(abs(value) - abs(self.value)) <= tol
        return abs(value - self.value) <= tol


def figures(text: str, source: str) -> list[Figure]:
    """Every figure in ``text`` that its own not-results comments do not exempt."""
    exempt: set[tuple[float, str]] = set()
    for line in text.splitlines():
        m = NOT_RESULTS.match(line.strip())
        if m:
            for item in m.group(1).split(";"):
                for num, unit in FIGURE.findall(item.strip()):
                    exempt.add((Figure.parse(num, unit, "").value, unit))
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if NOT_RESULTS.match(line.strip()):
            continue
        for m in MIN_SEC.finditer(line):
            seconds = f"{int(m.group(1)) * 60 + float(m.group(2)):g}"
            found.append(Figure.parse(seconds, "s", f"{source}:{lineno}"))
        line = MIN_SEC.sub(" ", line)
        for m in FIGURE.finditer(line):
            fig = Figure.parse(m.group(1), m.group(2), f"{source}:{lineno}")
            if (fig.value, fig.unit) not in exempt:
                found.append(fig)
    return found


@dataclass(frozen=True)
class Entry:
    """One row of the figure index."""

    figure: str
    value: Figure
    path: Path
    expression: str


def _cell(text: str) -> str:
    return text.strip().strip("`").strip()


def read_index(path: Path) -> list[Entry]:
    """The rows of the figure index table in ``path``."""
    entries: list[Entry] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    inside = False
    for lineno, line in enumerate(lines, 1):
        if HEADER.match(line):
            inside = True
            continue
        if not inside:
            continue
        if not line.startswith("|"):
            inside = False
            continue
        cells = [_cell(c) for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: "):
            continue  # the separator row
        if len(cells) < 4:
            raise SystemExit(f"{path}:{lineno}: an index row needs 4 cells, got {len(cells)}")
        found = FIGURE.findall(cells[1])
        if len(found) != 1:
            raise SystemExit(f"{path}:{lineno}: value {cells[1]!r} is not one number with a unit")
        value = Figure.parse(*found[0], where=f"{path.name}:{lineno}")
        entries.append(Entry(cells[0], value, ROOT / cells[2], cells[3]))
    return entries


def load(path: Path) -> dict:
    """What an expression can use for ``path``: ``rows`` of JSONL, ``data`` of JSON."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return {"rows": rows, "data": None}
    return {"rows": None, "data": json.loads(text)}


def evaluate(entry: Entry, cache: dict[Path, dict]) -> float:
    """The value ``entry.expression`` computes from its results file."""
    if entry.path not in cache:
        cache[entry.path] = load(entry.path)
    scope = dict(cache[entry.path])
    rows = scope["rows"] or []

    def col(name: str, **where: object) -> list:
        return [r[name] for r in rows if all(r.get(k) == v for k, v in where.items())]

    def results(path: str) -> object:
        other = ROOT / path
        if other not in cache:
            cache[other] = load(other)
        return cache[other]["rows"] if other.suffix == ".jsonl" else cache[other]["data"]

    names = {"col": col, "results": results, "mean": statistics.fmean, "min": min, "max": max,
             "len": len, "round": round, "abs": abs}  # fmt: skip
    return float(eval(entry.expression, {"__builtins__": {}}, {**scope, **names}))  # noqa: S307


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check(docs: list[Path], index: Path) -> list[str]:
    """Every problem found: index values their files do not give, figures the index lacks."""
    problems = []
    entries = read_index(index)
    if not entries:
        problems.append(f"{index}: no figure index table found")
    cache: dict[Path, dict] = {}
    for e in entries:
        if not e.path.is_file():
            problems.append(f"{e.value.where}: {e.figure}: no results file {e.path}")
            continue
        try:
            got = evaluate(e, cache)
        except Exception as exc:  # the expression is data: report it, do not crash
            problems.append(f"{e.value.where}: {e.figure}: {e.expression!r} failed: {exc!r}")
            continue
        if not e.value.matches(got, e.value.unit):
            problems.append(
                f"{e.value.where}: {e.figure}: the index says {e.value.text()}, "
                f"{_shown(e.path)} gives {got:.6g} ({e.expression})"
            )
    for doc in docs:
        for fig in figures(doc.read_text(encoding="utf-8"), _shown(doc)):
            if not any(fig.matches(e.value.value, e.value.unit) for e in entries):
                problems.append(f"{fig.where}: {fig.text()} is not in the figure index ({INDEX})")
    return problems


def missing_results(pages: list[Path]) -> list[str]:
    """Results files the pages name (under ``benchmarks/results/``) that do not exist."""
    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()} if RESULTS.is_dir() else set()
    problems = []
    for page in pages:
        for lineno, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for ref in RESULT_REF.findall(line):
                if ref.startswith("benchmarks/results/"):
                    path = ROOT / ref
                elif ref.split("/")[0] in folders:
                    path = RESULTS / ref
                else:
                    continue  # not a results file (``OUT/manifest.jsonl``)
                if not path.is_file():
                    problems.append(f"{_shown(page)}:{lineno}: no results file {ref}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("docs", nargs="*", type=Path, help=f"default: {' '.join(DOCS)}")
    ap.add_argument("--index", type=Path, default=ROOT / INDEX)
    args = ap.parse_args(argv)
    docs = [p.resolve() for p in args.docs] or [ROOT / d for d in DOCS]
    problems = check(docs, args.index.resolve())
    if not args.docs:
        problems += missing_results([ROOT / d for d in CITING])
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} figure(s) not traced to a results file")
        return 1
    print(f"docs numbers: every figure in {len(docs)} file(s) traced to a results file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
