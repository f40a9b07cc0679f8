"""The shape of the code base itself: every module imports, a limit two modules
share is defined once, and the gateway's top stays the face of a service.
(Import layering is import-linter's job: `lint-imports`, contracts in
pyproject.toml.)"""

from __future__ import annotations

import ast
import collections
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "services", "gateway", "bench", "tools")


def project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            # Entry points run their command when imported.
            if module.name.rsplit(".", 1)[-1] != "__main__":
                names.append(module.name)
    return sorted(names)


def source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("module", project_modules())
def test_every_module_imports(module: str) -> None:
    """A module a move left behind, or an import of a name that moved, fails
    here even where no test exercises it."""
    importlib.import_module(module)


def _constants(path: Path) -> list[tuple[str, str]]:
    """(name, value) of the upper-case constants a module defines with a
    plain value (not a TypeVar, nor a path of its own file)."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = [target for target in node.targets if isinstance(target, ast.Name)], node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        text = ast.unparse(value)
        if "TypeVar(" in text or "__file__" in text:
            continue
        found += [(target.id.lstrip("_"), text) for target in targets if target.id.lstrip("_").isupper()]
    return found


def test_no_constant_is_defined_twice() -> None:
    """A number two modules need is defined once (shared limits: common/limits.py)
    and imported, never copied with a comment that keeps the copies equal."""
    where = collections.defaultdict(list)
    for path in source_files():
        for name, value in _constants(path):
            where[(name, value)].append(str(path.relative_to(ROOT)))
    copies = {f"{name} = {value}": paths for (name, value), paths in where.items() if len(paths) > 1}
    assert not copies


def test_the_gateway_top_is_the_face_of_a_service() -> None:
    """At most 8 modules at gateway/'s top; the rest live in subpackages by concern."""
    top = sorted(path.name for path in (ROOT / "gateway").glob("*.py"))
    assert len(top) <= 8, top


def test_the_shared_limits_import_nothing() -> None:
    """common/limits.py is imported by the gateway (no numpy) and every engine."""
    tree = ast.parse((ROOT / "common" / "limits.py").read_text())
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(node) for node in imports] == ["from __future__ import annotations"]


MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80


def test_no_class_over_400_lines_and_no_function_over_80() -> None:
    """A class that long is several units, and a function that long several
    steps: split them along their seams (the project's tests included)."""
    too_long = []
    for path in [*source_files(), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long


def test_unit_tests_mirror_the_modules_they_cover() -> None:
    """tests/unit/<path>/test_<name>.py covers <path>/<name>.py (or the package
    <path>/<name>/), so a newcomer goes from a module to its tests in one step."""
    unit = ROOT / "tests" / "unit"
    orphans = []
    for test in sorted(unit.rglob("test_*.py")):
        if test.parent == unit and test.stem in ("test_house", "test_deploy"):  # the project itself; deploy/
            continue
        module = test.parent.relative_to(unit) / test.stem.removeprefix("test_")
        if not (ROOT / module.with_suffix(".py")).is_file() and not (ROOT / module).is_dir():
            orphans.append(str(test.relative_to(ROOT)))
    assert not orphans
