"""Tissue-crop results of two runs side by side: gains over ``ibp`` per crop and blend rule.

Reads the JSONL files of ``tissue_crops.py``: ``--before`` (a previous default, its shipped
output) and ``--after`` (a run whose rows carry the model alone, the fixed blends ``w=0.75``
and ``w=0.5``, its own shipped output with the weight it used, and the guard's decision; with
``--engine model_weight=pairs``, the per-series weight of the guard's pairs). Prints, per
scale, every crop's gain for each rule and the means and the worst, as text or as a reST
list-table (``--rst``) for the docs. Rows are matched on crop, set and scale; the last row of
each wins (a file may hold a rerun).

Usage::

    python benchmarks/crop_rules.py --before results/tissue_crops/x2-v7.jsonl \\
        --after results/tissue_crops/v8-pairs.jsonl --sets A,B,C
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: (column title, key in the ``--after`` rows); "shipped" is the after run's own output (with
#: ``model_weight=pairs``, the per-series weight of the guard's pairs)
RULES = [("alone", "alone"), ("w=0.5", "w=0.5"), ("w=0.75", "w=0.75"), ("shipped", "shipped")]


def rows(paths: list[Path]) -> dict[tuple[str, str, int], dict]:
    """(set, crop, scale) -> the last row for it in ``paths``."""
    out = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["set"], r["crop"], r["scale"])] = r
    return out


def table(before: dict, after: dict, sets: set[str], scale: int) -> list[list[str]]:
    """One line per crop at ``scale`` (before's shipped, then each rule), then mean and worst."""
    keys = sorted(k for k in after if k[2] == scale and k[0] in sets)
    lines, cols = [], {name: [] for name in ["before", *(n for n, _ in RULES)]}
    for key in keys:
        a, b = after[key], before.get(key)
        cols["before"].append(b["shipped"] if b else None)
        for name, field in RULES:
            cols[name].append(a[field])
        weight = f"{a['weight']:g}" if a.get("weight") is not None else "-"
        guard = a.get("decision") if a.get("guard_gain") is not None else "not judged"
        cells = [key[0], _short(key[1]), "x".join(map(str, a["hw"]))]
        cells += [_db(cols[n][-1]) for n in cols]
        lines.append([*cells, weight, guard, str(a.get("iterations")), f"{a['seconds']:.0f}"])
    for label, fn in (("mean", _mean), ("worst", _worst)):
        lines.append(["", label, "", *(_db(fn(v)) for v in cols.values()), "", "", "", ""])
    return lines


def _short(crop: str) -> str:
    name, _, rest = crop.partition("#")
    return f"{name.split('_')[0].split('.')[0][:12]}#{rest}"


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _mean(v: list) -> float | None:
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None


def _worst(v: list) -> float | None:
    v = [x for x in v if x is not None]
    return min(v) if v else None


HEADER = ["set", "crop", "size", "before", "alone", "w=0.5", "w=0.75", "shipped", "weight",
          "guard", "iterations", "s"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, nargs="+", required=True)
    ap.add_argument("--after", type=Path, nargs="+", required=True)
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--rst", action="store_true")
    args = ap.parse_args(argv)
    before, after = rows(args.before), rows(args.after)
    sets = set(args.sets.split(","))
    for scale in map(int, args.scales.split(",")):
        lines = table(before, after, sets, scale)
        if args.rst:
            print(f".. list-table:: x{scale}, sets {args.sets}\n   :header-rows: 1\n")
            for line in [HEADER, *lines]:
                print("   * - " + "\n     - ".join(c or " " for c in line))
            print()
        else:
            print(f"x{scale}")
            for line in [HEADER, *lines]:
                print("  ".join(f"{c:>10}" for c in line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
