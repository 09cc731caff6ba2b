"""The house's layers (README, "Architecture"): the import-linter contracts of pyproject.toml hold,
so no import runs back up and no cycle between the layers can return; and an import inside a
function says why it is there (an optional or heavy dependency loaded on first use)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scaled_ql", "data_prep", "benchmarks")


def test_import_linter_contracts_hold(capsys):
    cwd = os.getcwd()
    os.chdir(ROOT)  # the contracts name the checkout's top-level packages
    try:
        status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 broken" in out and " kept" in out


def _function_local_imports(file: Path) -> list[tuple[int, str]]:
    source = file.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)) and "#" not in lines[sub.lineno - 1]:
                    found.append((sub.lineno, lines[sub.lineno - 1].strip()))
    return found


def test_every_function_local_import_states_its_reason():
    unexplained = [f"{file.relative_to(ROOT)}:{line}: {text}"
                   for package in PACKAGES for file in sorted((ROOT / package).rglob("*.py"))
                   for line, text in _function_local_imports(file)]
    assert not unexplained, ("imports inside functions without a comment saying why (an optional or heavy dependency "
                             "loaded on first use); move them to the top of the file or say why:\n  " + "\n  ".join(unexplained))


def test_every_module_of_the_package_and_the_converters_fits_450_lines():
    long = {str(f.relative_to(ROOT)): n for package in ("scaled_ql", "data_prep") for f in sorted((ROOT / package).rglob("*.py"))
            if (n := len(f.read_text().splitlines())) >= 450}
    assert not long, f"modules of 450 lines or more (split them by job): {long}"
