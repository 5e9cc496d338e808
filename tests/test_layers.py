"""The package's import graph has layers, and no import goes up: every `import` and `from ... import` of an
`organics_bench` module, at module level, inside a function or under `TYPE_CHECKING`, goes to a module of the same
or a lower layer."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "organics_bench"

# Layer of each module, by the longest matching dotted prefix (lowest first).
LAYERS: dict[str, int] = {
    # 0: foundations, which import nothing of the package above them
    "organics_bench.errors": 0,
    "organics_bench.io": 0,
    "organics_bench.settings": 0,
    "organics_bench.equations": 0,
    "organics_bench.plots": 0,
    "organics_bench.theory.settings": 0,
    # 1: what is benchmarked, and the theory experiments
    "organics_bench.models": 1,
    "organics_bench.nn": 1,
    "organics_bench.tasks": 1,
    "organics_bench.theory": 1,
    # 2: checking a config, measuring a model
    "organics_bench.contracts": 2,
    "organics_bench.config_checks": 2,
    "organics_bench.diagnostics": 2,
    # 3: running a job
    "organics_bench.training": 3,
    # 4: the entry points
    "organics_bench.cli": 4,
    "organics_bench.api": 4,
    "organics_bench.arguments": 4,
    "organics_bench.report": 4,
    "organics_bench.leaderboard": 4,
    "organics_bench.paper_table": 4,
    "organics_bench.data_command": 4,
    "organics_bench.in_progress": 4,
    "organics_bench.long_sequences": 4,
    "organics_bench.__main__": 4,
    "organics_bench": 4,
}


def layer_of(module: str) -> int:
    """The layer of the longest prefix of `module` in `LAYERS`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> list[tuple[str, int]]:
    """(imported organics_bench module, line) for every import in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("organics_bench"):
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: a relative import; the layer check needs absolute ones")
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("organics_bench")]
    return found


def imported_module(name: str) -> str:
    """`organics_bench.models.base.Classifier` -> `organics_bench.models.base`: the longest prefix that is a module or
    package of the source tree."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = PACKAGE.parent.joinpath(*parts[:end])
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts[:end])
    raise AssertionError(f"{name} is not a module of the package")


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_import_goes_from_a_lower_layer_to_a_higher_one():
    back_edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for name, line in package_imports(path):
            target = imported_module(name)
            if layer_of(target) > layer_of(importer):
                back_edges.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} -> {target}")
    assert not back_edges, "imports that go up a layer:\n" + "\n".join(back_edges)


def test_the_check_sees_nested_and_type_checking_imports(tmp_path):
    """The walk finds an import inside a function and one under `if TYPE_CHECKING:`."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from organics_bench.training.sinks import WandbSink\n"
        "def f():\n    import organics_bench.cli\n"
    )
    found = [imported_module(name) for name, _ in package_imports(source)]
    assert found == ["organics_bench.training.sinks", "organics_bench.cli"]
    assert [layer_of(m) for m in found] == [3, 4]
