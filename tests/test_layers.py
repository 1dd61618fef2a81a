"""Imports flow one way: cli and jobs, then pipeline, then models, then io.

The model layer stays free of Spark and of the warehouse, so a model can be trained, loaded and
scored in any Python process; reading tables is job plumbing and belongs in ``pipeline``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "epm_spark"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offending(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.startswith(forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("layer, forbidden", [
    ("io", ("epm_spark.models", "epm_spark.pipeline", "epm_spark.cli")),
    ("models", ("epm_spark.pipeline", "epm_spark.cli", "pyspark", "epm_spark.io.delta", "epm_spark.spark")),
    ("pipeline", ("epm_spark.cli",)),
])
def test_a_layer_imports_only_the_layers_below_it(layer, forbidden):
    assert offending(layer, forbidden) == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    # Most of the project imports heavy modules inside the function that needs them.
    module = tmp_path / "job.py"
    module.write_text("def run():\n    from epm_spark.io.delta import read_pandas\n    return read_pandas\n")
    assert "epm_spark.io.delta" in imported_modules(module)
