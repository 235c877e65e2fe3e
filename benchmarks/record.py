"""Where benchmark results go, and what every record says about how it was made.

Every script in ``benchmarks/`` writes its results through this module, so each record carries
its provenance under the key ``"provenance"``:

- ``script`` and ``command``: the script (relative to the repository) and its command line;
- ``commit`` (``git rev-parse HEAD``) and ``dirty`` (uncommitted changes to tracked files), as
  they were when the script started;
- ``pipeline``: name, version and config hash of the configuration the script ran
  (:meth:`dicom_sr.config.PipelineConfig.hash`);
- ``date`` (UTC) and ``machine``: :func:`dicom_sr.evaluate.measure.machine_info` (CPU model and
  capability, native bf16, threads, GPU) plus the device the run used and the load average.

Results live in ``benchmarks/results/<script>/``: ``--out NAME`` with a bare file name puts
the file there; a path with a folder is used as given. A JSON file is one record (written
atomically); a JSONL file is one record per line, appended as each is measured, each line with
its own provenance, so lines appended by a later run say so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

__all__ = ["RESULTS", "append_jsonl", "provenance", "results_path", "write_json"]


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip()


def _git_state() -> tuple[str | None, bool | None]:
    """HEAD and whether tracked files differ from it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD"), None if status is None else bool(status)


#: the commit a script started from (scripts import this module first): later commits or edits
#: while a long benchmark runs do not change what its records say it ran
_AT_START = _git_state()


def script_name(script: str | os.PathLike[str]) -> str:
    """``benchmarks/tissue_crops.py`` -> ``tissue_crops``: the script's results folder."""
    return Path(script).stem


def results_path(script: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Where ``--out`` puts a file: a bare name under ``benchmarks/results/<script>/``."""
    out = Path(out)
    if out.parent == Path("."):
        return RESULTS / script_name(script) / out
    return out


def provenance(
    script: str | os.PathLike[str],
    config: Any = None,
    *,
    device: str | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The provenance block of a record made now by ``script`` with ``config``.

    ``config`` is a :class:`~dicom_sr.config.PipelineConfig` (or None when the script runs no
    pipeline); ``device`` the device the work ran on (``cpu``, ``cuda``).
    """
    from dicom_sr.evaluate.measure import machine_info

    path = Path(script).resolve()
    try:
        rel = path.relative_to(ROOT).as_posix()
    except ValueError:
        rel = path.as_posix()
    argv = sys.argv[1:] if argv is None else argv
    commit, dirty = _AT_START
    machine = machine_info()
    machine["device"] = device or ("cuda" if machine.get("cuda") else "cpu")
    if hasattr(os, "getloadavg"):
        machine["load_average"] = [round(x, 2) for x in os.getloadavg()]
    pipeline = None
    if config is not None:
        pipeline = {"name": config.name, "version": config.version, "hash": config.hash()}
    return {
        "script": rel,
        "command": shlex.join(["python", rel, *argv]),
        "commit": commit,
        "dirty": dirty,
        "pipeline": pipeline,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
    }


def write_json(path: str | os.PathLike[str], record: Mapping[str, Any], prov: dict) -> Path:
    """Write ``record`` with ``prov`` under ``"provenance"`` to ``path``, all or nothing."""
    from dicom_sr.fsio import write_json as atomic_json

    path = Path(path)
    atomic_json(path, {"provenance": prov, **record})
    return path


def append_jsonl(path: str | os.PathLike[str], row: Mapping[str, Any], prov: dict) -> Path:
    """Append one record line (``row`` plus ``"provenance"``) to ``path``, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**row, "provenance": prov}, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path
