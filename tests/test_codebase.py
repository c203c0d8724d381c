"""House rules that a reviewer would otherwise have to check by hand."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_jobs_imports_neither_api_nor_workers() -> None:
    for path in (ROOT / "jobs").rglob("*.py"):
        assert not _imports(path) & {"api", "workers"}, path


def test_api_and_workers_never_import_each_other() -> None:
    for package, forbidden in (("api", "workers"), ("workers", "api")):
        for path in (ROOT / package).rglob("*.py"):
            assert forbidden not in _imports(path), path


def test_only_settings_reads_the_environment() -> None:
    for package in ("jobs", "workers", "api"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "settings.py":
                continue
            assert "os.environ" not in path.read_text() and "getenv" not in path.read_text(), path


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_packages() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_env_example_documents_every_setting() -> None:
    from jobs.settings import ENV

    text = (ROOT / ".env.example").read_text()
    missing = [var for var in ENV.values() if f"{var}=" not in text]
    assert not missing, f".env.example lacks {missing}"
