"""The one-way data flow of shared/DESIGN.md, checked on the source: no module imports a later stage.

``io`` → ``models`` → ``geometry``/``scoring`` → ``render``/``detect`` → ``tasks`` → ``batch``/``train`` → ``cli``.
Each package module is given its stage below; an import of a module from a later stage fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fcn_app"

#: Stage of each module (by dotted name prefix; the longest matching prefix wins). Lower stages come first.
STAGES = {
    "fcn_app.errors": 0, "fcn_app.layers": 0, "fcn_app.device": 0, "fcn_app.processes": 0,
    "fcn_app.choices": 0, "fcn_app.classes": 0,  # option vocabularies and class names: no torch (the CLI's start)
    "fcn_app.method_registry": 0,  # what each --method is and needs: no torch
    "fcn_app.contracts": 0,  # what a scoring network provides (typing.Protocol): no torch
    "fcn_app.io": 1, "fcn_app.method_plan": 1, "fcn_app.text": 1, "fcn_app.launcher": 1, "fcn_app.startup": 1,
    "fcn_app.models": 2,
    "fcn_app.geometry": 3, "fcn_app.tiling": 3, "fcn_app.catalog": 3,
    "fcn_app.segmentation": 4,  # datasets, transforms, metrics; the FCN model builds on geometry
    "fcn_app.scoring": 5, "fcn_app.runtimes": 5,
    "fcn_app.heatmaps": 6, "fcn_app.pyramid": 6, "fcn_app.dense": 6, "fcn_app.export": 6, "fcn_app.resolution": 6,
    "fcn_app.methods": 6, "fcn_app.metrics": 6,
    "fcn_app.render": 7, "fcn_app.coco": 7, "fcn_app.detect": 7,
    "fcn_app.tasks": 8,
    "fcn_app.batch": 9, "fcn_app.batch.gallery": 9, "fcn_app.train": 9, "fcn_app.serve": 9,
    "fcn_app.cli": 10, "fcn_app.__main__": 10,
}


def stage_of(module: str) -> int:
    matches = [prefix for prefix in STAGES if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no stage in STAGES; add it"
    return STAGES[max(matches, key=len)]


def imports_of(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("fcn_app")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("fcn_app"):
                names = [f"{target}.{alias.name}" for alias in node.names]
                found += [name if _is_module(name) else target for name in names]
    return found


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(path.relative_to(PACKAGE)) for path in MODULES])
def test_no_module_imports_a_later_stage(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if module == "fcn_app":
        return  # the package's public API re-exports every stage
    own = stage_of(module)
    upward = [name for name in imports_of(path, module) if name != "fcn_app" and stage_of(name) > own]
    assert not upward, f"{module} (stage {own}) imports later stages: {upward}"


@pytest.mark.parametrize("package", ["models"])
def test_a_package_imports_its_own_modules_in_one_direction(package):
    """No import loop inside a package, not even one broken by an import inside a function."""
    folder = PACKAGE / package
    names = {path: f"fcn_app.{package}.{path.stem}" for path in folder.glob("*.py") if path.name != "__init__.py"}
    edges = {name: {target for target in imports_of(path, name) if target in names.values() and target != name}
             for path, name in names.items()}
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            cycle = visiting[visiting.index(module):] + [module]
            pytest.fail(f"import loop: {' → '.join(cycle)}")
        if module not in done:
            visiting.append(module)
            for target in sorted(edges[module]):
                visit(target)
            visiting.pop()
            done.add(module)

    for module in sorted(edges):
        visit(module)
