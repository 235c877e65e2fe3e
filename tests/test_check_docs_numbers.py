"""scripts/check_docs_numbers.py: the docs' figures against the figure index and the results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location(
        "check_docs_numbers", ROOT / "scripts" / "check_docs_numbers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _index(tmp_path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = [
        "# results",
        "",
        "| figure | value | results file | computed as |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in rows]
    path = tmp_path / "index.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def results(tmp_path):
    """A JSONL results file of three crops and a JSON one of a run."""
    crops = tmp_path / "crops.jsonl"
    rows = [{"crop": "a", "set": "A", "shipped": 0.412}, {"crop": "b", "set": "A", "shipped": -0.1},
            {"crop": "c", "set": "C", "shipped": 0.55}]  # fmt: skip
    crops.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"runs": {"new": {"seconds": 338.0}}}), encoding="utf-8")
    return crops, run


def test_the_repository_docs_pass(checker):
    """The pages DOCS names (README.rst, docs/benchmarks.rst, batch, operations, gpu): traced."""
    assert checker.main([]) == 0


def test_a_made_up_number_fails(checker, tmp_path, results, capsys):
    crops, run = results
    index = _index(
        tmp_path,
        [
            ("mean", "+0.29 dB", str(crops), 'mean(col("shipped"))'),
            ("demo", "338 s", str(run), 'data["runs"]["new"]["seconds"]'),
        ],
    )
    doc = tmp_path / "doc.rst"
    doc.write_text(
        "It gains +0.29 dB on average and\ntakes 5 min 38 s; the worst crop gains +9.87 dB.\n",
        encoding="utf-8",
    )
    assert checker.main([str(doc), "--index", str(index)]) == 1
    out = capsys.readouterr().out
    assert "doc.rst:2: +9.87 dB is not in the figure index" in out
    assert "0.29" not in out and "338" not in out  # the true figures, one in min+s, pass


def test_an_index_value_its_file_does_not_give_fails(checker, tmp_path, results, capsys):
    crops, _ = results
    worst = 'min(col("shipped", set="A"))'
    index = _index(tmp_path, [("worst of A", "-0.12 dB", str(crops), worst)])
    doc = tmp_path / "doc.rst"
    doc.write_text("Worst crop -0.12 dB.\n", encoding="utf-8")
    assert checker.main([str(doc), "--index", str(index)]) == 1
    out = capsys.readouterr().out
    assert "worst of A: the index says -0.12 dB" in out and "gives -0.1 (" in out


def test_precision_sign_and_exemptions(checker, tmp_path, results):
    crops, _ = results
    index = _index(tmp_path, [("worst", "-0.10 dB", str(crops), "min(col('shipped'))")])
    doc = tmp_path / "doc.rst"
    # unsigned = the size of a loss; fewer decimals match; the margin is declared a setting
    doc.write_text(
        ".. check-docs-numbers: not results: -1 dB\n"
        "It loses 0.1 dB at worst (-0.10 dB), under a -1 dB margin, at 640x480, x2.\n",
        encoding="utf-8",
    )
    assert checker.check([doc], index) == []
    doc.write_text("It loses -0.11 dB, or -0.1 s.\n", encoding="utf-8")
    problems = checker.check([doc], index)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "-0.11 dB is not in the figure index (benchmarks/README.md)",
        "-0.1 s is not in the figure index (benchmarks/README.md)",
    ]


def test_a_results_file_the_docs_name_must_exist(checker, tmp_path):
    page = tmp_path / "page.rst"
    page.write_text(
        "Run ``tissue_crops/x4-v7.jsonl`` and ``archive/x4-direct-v3.jsonl``, written to\n"
        "``OUT/manifest.jsonl``; ``tissue_crops/x4-v9.jsonl`` is made up.\n",
        encoding="utf-8",
    )
    problems = checker.missing_results([page])
    assert len(problems) == 1 and problems[0].endswith("page.rst:2: no results file "
                                                        "tissue_crops/x4-v9.jsonl")  # fmt: skip


def test_thousands_new_units_and_a_second_file(checker, tmp_path, results):
    """``1,027 s`` is one figure; series/s and TFLOP are units; ``results()`` reads another file."""
    crops, run = results
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rate": 48.68, "tflop": 4.0199, "seconds": 1027.09}))
    index = _index(
        tmp_path,
        [
            ("run", "1027 s", str(other), 'data["seconds"]'),
            ("rate", "48.7 series/s", str(other), 'data["rate"]'),
            ("flops", "4.02 TFLOP", str(other), 'data["tflop"]'),
            (
                "longer",
                "689 s",
                str(other),
                f'data["seconds"] - results("{run}")["runs"]["new"]["seconds"]',
            ),  # noqa: E501
        ],
    )
    doc = tmp_path / "doc.rst"
    doc.write_text(
        "It ran 1,027 s (689 s longer), 48.7 series/s, counting 4.02 TFLOP.\n", encoding="utf-8"
    )
    assert checker.check([doc], index) == []
    doc.write_text("It ran 2,027 s at 48.9 series/s for 4.1 TFLOP.\n", encoding="utf-8")
    problems = [p.split(": ", 1)[1] for p in checker.check([doc], index)]
    assert problems == [
        f"{fig} is not in the figure index (benchmarks/README.md)"
        for fig in ("2027 s", "48.9 series/s", "4.1 TFLOP")
    ]
