"""House rules that a reviewer would otherwise have to check by hand."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- The shape established by the structure issue ---------------------------------------------------------------

_SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b", re.S)
_LUA = re.compile(r"redis\.call\(|\bKEYS\[\d")


def _strings(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _calls(path: Path) -> set[str]:
    return {node.func.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}


def test_api_has_no_sql_and_no_lua() -> None:
    for path in (ROOT / "api").rglob("*.py"):
        for text in _strings(path):
            assert not _SQL.search(text), f"{path} holds SQL: {text[:80]!r} (it belongs in jobs/)"
            assert not _LUA.search(text), f"{path} holds Lua: {text[:80]!r} (it belongs in jobs/)"
        assert not _calls(path) & {"execute", "executemany", "register_script", "eval", "evalsha"}, path
    assert not list((ROOT / "api").rglob("*.lua")) and not list((ROOT / "api").rglob("*.sql"))


def test_no_route_module_imports_another() -> None:
    routes = ROOT / "api" / "routes"
    for path in routes.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("api.routes"), f"{path.name} imports {node.module}"
                if node.module == "api":
                    assert "routes" not in {a.name for a in node.names}, path


def test_every_route_module_lists_its_routes() -> None:
    from api.routes import route_modules

    modules = route_modules()
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} == {
        p.stem for p in (ROOT / "api" / "routes").glob("*.py") if p.stem != "__init__"}
    for module in modules:
        assert isinstance(module.ROUTES, list) and module.ROUTES, module.__name__


def test_every_job_kind_has_exactly_one_handler_and_a_lane() -> None:
    from jobs.kinds import JOB_TYPES, LANES
    from jobs.states import Kind
    from workers.handlers import HANDLERS

    assert set(JOB_TYPES) == set(HANDLERS) == {str(k) for k in Kind}
    for kind, job_type in JOB_TYPES.items():
        assert job_type.lanes and set(job_type.lanes) <= set(LANES), kind


def test_workers_declare_actors_only_for_lanes_of_handled_kinds() -> None:
    source = (ROOT / "workers" / "app.py").read_text()
    assert "for queue in LANES" in source and "for queue in Queue" not in source


def test_error_codes_are_unique() -> None:
    from jobs.errors import every_error

    codes = [cls.code for cls in every_error()]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)


def test_api_raises_only_errors_of_the_tree() -> None:
    # Every code is defined once: no ad-hoc error classes or inline codes in the API layer.
    for path in (ROOT / "api").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                assert not bases & {"SwitchyardError", "Exception", "HTTPException"}, f"{path}: {node.name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "SwitchyardError":
                assert not node.keywords, f"{path}:{node.lineno} builds an error with an inline code"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Litestar 3 style notes, not ours to act on here
def test_docs_and_openapi_list_every_error_code() -> None:
    from api.app import create_app
    from api.errors import error_codes
    from jobs.settings import settings_from

    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "errors.md").read_text(), re.M))
    assert documented == set(error_codes()), f"docs/errors.md: missing {set(error_codes()) - documented}, " \
                                             f"stale {documented - set(error_codes())}"
    app = create_app(settings_from({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    description = app.openapi_schema.info.description or ""
    missing = [code for code in error_codes() if f"`{code}`" not in description]
    assert not missing, f"the OpenAPI description lacks {missing}"
