"""The layering holds: app/ → pipelines/ → processors/, never back; no import cycles in app/."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.storage_free

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each module file under `package/` → the top-level packages it imports (anywhere in it)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("pipelines", {"app"}), ("processors", {"app", "pipelines"})]
)
def test_dependencies_point_one_way(package, forbidden):
    wrong = {
        module: sorted(names & forbidden)
        for module, names in imported_packages(package).items()
        if names & forbidden
    }
    assert not wrong, f"{package}/ must not import {sorted(forbidden)}: {wrong}"


def test_no_import_cycles_in_app():
    """Module-level imports among app's modules, those for type checking included, form no
    cycle (imports inside functions are left out: they run late, by design)."""
    paths = [p for p in (ROOT / "app").rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(path): path for path in paths}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:
            statements = node.body if isinstance(node, ast.If) else [node]  # if TYPE_CHECKING:
            for statement in statements:
                if isinstance(statement, ast.Import):
                    targets.update(alias.name for alias in statement.names)
                elif isinstance(statement, ast.ImportFrom):
                    base = statement.module or ""
                    if statement.level:
                        up = (
                            package.rsplit(".", statement.level - 1)[0]
                            if statement.level > 1
                            else package
                        )
                        base = f"{up}.{base}" if base else up
                    targets.add(base)
                    targets.update(f"{base}.{alias.name}" for alias in statement.names)
        graph[name] = {t for t in targets if t in modules and t != name}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            module, trail = stack.pop()
            for target in graph[module]:
                if target == start:
                    return [*trail, start]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
        return None

    cycles = [cycle for name in sorted(graph) if (cycle := cycle_from(name))]
    assert not cycles, "import cycle: " + " → ".join(cycles[0])
