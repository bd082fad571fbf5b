"""Imports point one way: kestrel (shared) <- flight, ground <- hil.

Every module's imports are read from its source (module level and inside
functions alike) and each edge is held to the rule; then the programs are
imported in fresh interpreters to see what they really load.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kestrel", "flight", "ground", "hil")
# The compiled kernels live in flight.kernels (ext/*.pyx) and import nothing of
# ours, so the shared codecs and the ground may load them without loading the
# flight program.
KERNELS = "flight.kernels"
ALLOWED = {
    "kestrel": {"kestrel", KERNELS},
    "flight": {"kestrel", "flight", KERNELS},
    "ground": {"kestrel", "ground", KERNELS},
    "hil": {"kestrel", "flight", "ground", "hil"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path):
    """(line, imported module) for every import of one of our packages in a source file."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def owner(name: str) -> str:
    return KERNELS if name == KERNELS or name.startswith(KERNELS + ".") else name.split(".")[0]


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_import_points_the_allowed_way():
    wrong = []
    for path in sources():
        layer = module_name(path).split(".")[0]
        for line, name in project_imports(path):
            if owner(name) not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "imports against the one-way rule:\n" + "\n".join(wrong)


def test_kernels_import_nothing_of_ours():
    for source in sorted((ROOT / "ext").glob("*.py[xi]")):
        text = source.read_text()
        for package in PACKAGES:
            assert f"import {package}" not in text and f"from {package}" not in text, source.name


def test_the_walker_sees_relative_and_function_level_imports():
    """Else the rule above could pass vacuously."""
    found = dict((name, line) for line, name in project_imports(ROOT / "flight" / "executive.py"))
    assert "kestrel.products" in found and "flight.detection.Detector" in found
    found = [name for _, name in project_imports(ROOT / "kestrel" / "link" / "config.py")]
    assert "kestrel.link.reed_solomon.ReedSolomonCodec" in found  # imported inside a function


def loaded_modules(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return set(out.stdout.split())


def test_the_flight_program_loads_no_bench_and_no_ground():
    modules = loaded_modules("import flight.executive, flight.cli")
    assert not [m for m in modules if m.startswith(("hil", "ground"))]


def test_the_ground_loads_no_bench_and_no_flight_program():
    modules = loaded_modules("import ground.cli")
    assert not [m for m in modules if m.startswith("hil")]
    assert not [m for m in modules if m.startswith("flight") and owner(m) != KERNELS and m != "flight"]


@pytest.mark.parametrize("module", ["kestrel.products", "kestrel.link.spacepacket", "kestrel.link.tmframe",
                                    "kestrel.link.config", "kestrel.config"])
def test_a_format_module_loads_no_kernel(module):
    assert not [m for m in loaded_modules(f"import {module}") if m.startswith(KERNELS + ".")]
