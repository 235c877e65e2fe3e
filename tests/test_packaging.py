"""The package as users get it: the wheel's contents, the extras, the test-data guard."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import conftest
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

#: Which requirement sets a subpackage's imports may come from (besides install_requires).
EXTRAS_OF = {
    "dicom_sr/evaluate": ("evaluate",),
    "dicom_sr/batch": ("batch",),
    "dicom_sr/cli": ("evaluate", "batch"),  # its evaluate and batch commands say what to install
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> dict[str, set[str]]:
    """install_requires (key "") and each extra of setup.cfg, as normalised project names."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def names(text: str) -> set[str]:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
        return {_norm(Requirement(ln).name) for ln in lines}

    out = {"": names(cfg["options"]["install_requires"])}
    for extra, text in cfg["options.extras_require"].items():
        out[extra] = names(text)
    return out


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports, leaving out the standard library, dicom_sr, imports
    only for type checkers, and optional ones (inside ``try: ... except ImportError``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        if isinstance(node, ast.Try) and any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        ):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "dicom_sr"}


def test_each_extra_installs_what_its_code_imports():
    reqs = _requirements()
    dists = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted((ROOT / "dicom_sr").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        extras = next((e for prefix, e in EXTRAS_OF.items() if rel.startswith(prefix)), ())
        allowed = set(reqs[""]).union(*(reqs[e] for e in extras))
        for module in sorted(_third_party_imports(path)):
            projects = {_norm(d) for d in dists.get(module, [module])}
            if not projects & allowed:
                where = " or ".join(["install_requires", *extras])
                missing.append(f"{rel} imports {module} ({'/'.join(projects)}): not in {where}")
    assert not missing, "\n".join(missing)


def test_the_scan_sees_a_missing_requirement(tmp_path):
    """The check above can fail: psutil imported without being declared is reported."""
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nimport psutil\ntry:\n    import fcntl2\nexcept ImportError:\n    pass\n"
    )
    assert _third_party_imports(module) == {"psutil"}
    assert "psutil" not in _requirements()[""]


def _source_copy(dest: Path) -> Path:
    """What git would commit (tracked and untracked, not ignored), copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are sources")
    work = tmp_path_factory.mktemp("wheel")
    src = _source_copy(work / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(work / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = (work / "dist").glob("dicom_sr-*.whl")
    return built


def test_wheel_ships_the_named_pipelines(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("dicom_sr/pipelines/") for n in names if "/pipelines/" in n}
    assert shipped == {p.name for p in (ROOT / "pipelines").glob("*.toml")}
    assert "bmode-default.toml" in shipped
    packages = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("dicom_sr/**/*.py")}
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} is not in the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/", "pipelines/")) for n in names)


def test_wheel_metadata_declares_the_extras(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    requires = [Requirement(v.strip()) for v in re.findall(r"^Requires-Dist:(.*)$", text, re.M)]
    by_extra: dict[str, set[str]] = {}
    for req in requires:
        extra = re.search(r'extra == "([^"]+)"', str(req.marker or ""))
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(_norm(req.name))
    assert {"filelock", "prometheus-client", "pillow"} <= by_extra[""]
    assert {"psutil", "scikit-image", "matplotlib", "scipy"} <= by_extra["evaluate"]
    assert {"dask", "distributed"} <= by_extra["batch"]
    assert {"hypothesis", "pydicom-data"} <= by_extra["test"]


def test_a_missing_test_file_fails_unless_allowed(monkeypatch):
    monkeypatch.setattr(conftest, "get_testdata_file", lambda name: None)
    monkeypatch.delenv(conftest.ALLOW_MISSING_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="pip install pydicom-data"):
        conftest.us_file("US1_UNCR.dcm")
    monkeypatch.setenv(conftest.ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="US1_UNCR.dcm"):
        conftest.us_file("US1_UNCR.dcm")


@pytest.mark.slow
def test_wheel_install_runs_process_and_evaluate(tmp_path):
    """The CI's wheel stage (scripts/wheel_check.sh): fresh venv, torch, the wheel, two runs."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "wheel_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "wheel check passed" in proc.stdout
    assert list((tmp_path / "out").rglob("*.dcm"))


def test_wheel_ships_the_viewer_assets(wheel):
    """The compare page copies its script and style sheet from the package: the wheel has them."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in (ROOT / "dicom_sr" / "viewer" / "assets").iterdir():
        assert f"dicom_sr/viewer/assets/{asset.name}" in names
