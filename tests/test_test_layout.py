"""The test tree's own rules: test modules share code through `tests/helpers/` (functions)
and `tests/conftest.py` (fixtures), never by importing one another; unit tests touch no storage."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.storage_free

TESTS = Path(__file__).resolve().parent
SILENCED_FIXTURE_IMPORT = re.compile(
    r"#\s*noqa:[^#]*\bF811\b|^\s*(from|import) tests\..*#\s*noqa:[^#]*\bF401\b"
)


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def is_test_module(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_no_module_imports_a_test_module_or_the_conftest():
    offenders = {
        str(path.relative_to(TESTS)): bad
        for path in sorted(TESTS.rglob("*.py"))
        if (bad := [m for m in imported_modules(path) if is_test_module(m)])
    }
    assert offenders == {}, "import shared code from tests.helpers, fixtures come from conftest"


def test_no_fixture_is_imported_past_the_linter():
    """Fixtures imported into a module show up as unused (F401) or redefined (F811) names."""
    silenced = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SILENCED_FIXTURE_IMPORT.search(line)
    ]
    assert silenced == []


def test_every_unit_test_module_is_storage_free():
    unit_modules = sorted((TESTS / "unit").glob("test_*.py"))
    assert unit_modules, "tests/unit holds the unit tests"
    unmarked = [
        path.name
        for path in unit_modules
        if "pytestmark = pytest.mark.storage_free" not in path.read_text()
    ]
    assert unmarked == []


def test_the_layout_checks_catch_what_they_look_for(tmp_path):
    module = tmp_path / "test_example.py"
    module.write_text(
        "def helper():\n    from tests.test_twilio import tw\n"
        "from tests.conftest import start_server\nimport tests.helpers.calls\n"
    )
    found = imported_modules(module)
    assert sorted(found) == ["tests.conftest", "tests.helpers.calls", "tests.test_twilio"]
    assert sorted(m for m in found if is_test_module(m)) == ["tests.conftest", "tests.test_twilio"]
    assert not is_test_module("tests.fakes.twilio_rest")
