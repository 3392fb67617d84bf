"""The package's layers import one way only: down (docs/architecture.md).

Every module under src/cacovid is parsed (not imported) and every `import cacovid…` / `from cacovid…`
in it, at any indentation (inside functions and `if TYPE_CHECKING:` blocks too), must name a module of
its own package or of a lower layer. Packages that share a layer do not import each other. A new
package must be given a layer here and in docs/architecture.md before it can import anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cacovid"

# Bottom to top. A unit is a subpackage or top-level module of `cacovid`; "cacovid" is the package's
# own __init__ (it re-exports the central types, so it sits right above them).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cacovid.types",),
    ("cacovid",),
    ("cacovid.ops", "cacovid.scoring", "cacovid.testing", "cacovid.distributed", "cacovid.progress"),
    ("cacovid.data", "cacovid.selectors"),
    ("cacovid.models",),
    ("cacovid.toy",),
    ("cacovid.policy",),
    ("cacovid.train",),
    ("cacovid.evaluate",),
    ("cacovid.integrations",),
    ("cacovid.cli",),
    ("cacovid.__main__",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(name: str) -> str:
    """'cacovid.train.trainer' -> 'cacovid.train'; 'cacovid' -> 'cacovid'."""
    return ".".join(name.split(".")[:2])


def _is_submodule(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).is_dir() or (PACKAGE / rel).with_suffix(".py").is_file()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a cacovid module in the file, at any depth."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cacovid"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "cacovid":
                continue
            if target == "cacovid":  # `from cacovid import x`: x may be a subpackage or a name
                out += [
                    (node.lineno, f"cacovid.{a.name}" if _is_submodule(f"cacovid.{a.name}") else "cacovid")
                    for a in node.names
                ]
            else:
                out.append((node.lineno, target))
    return sorted(out, key=lambda hit: hit[0])


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_finds_the_package():
    assert len(MODULES) > 40
    assert unit_of(module_name(PACKAGE / "train" / "trainer.py")) == "cacovid.train"
    assert module_name(PACKAGE / "__init__.py") == "cacovid"


def test_every_module_has_a_layer():
    missing = sorted({unit_of(module_name(p)) for p in MODULES} - set(RANK))
    assert not missing, f"give these a layer in tests/test_layers.py and docs/architecture.md: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    unit = unit_of(module_name(path))
    bad = []
    for line, target in imported_modules(path):
        other = unit_of(target)
        if other == unit:
            continue
        if other not in RANK:
            bad.append(f"line {line}: {target} (no such package or module with a layer)")
        elif RANK[other] >= RANK[unit]:
            bad.append(f"line {line}: {target} (layer {RANK[other]}) from {unit} (layer {RANK[unit]})")
    assert not bad, f"{path.relative_to(PACKAGE)} imports upward or sideways:\n" + "\n".join(bad)


def test_the_check_sees_nested_and_relative_imports(tmp_path, monkeypatch):
    """The parser catches imports inside functions and TYPE_CHECKING blocks, and relative ones."""
    fake = tmp_path / "cacovid"
    (fake / "policy").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("")
    src = fake / "policy" / "tuning.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cacovid.models.base import VideoLLM\n"
        "def f():\n    from cacovid.train.validation import validate_selector\n"
        "    from ..train import x\n    import cacovid.evaluate.harness\n"
        "from cacovid import train, types\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    got = imported_modules(src)
    assert got == [
        (3, "cacovid.models.base"),
        (5, "cacovid.train.validation"),
        (6, "cacovid.train"),
        (7, "cacovid.evaluate.harness"),
        (8, "cacovid.train"),
        (8, "cacovid"),
    ]


# ---- the package's lazy exports (PEP 562) ---------------------------------------------------------
# `cacovid/__init__.py` (layer 1) names public entry points of higher layers in its `_LAZY` table and
# imports them on first access only. The static walk above cannot see those imports (they are
# strings), so the table is checked here: it is the one place a lower layer may name a higher one,
# and `import cacovid` alone must load nothing above layer 1.
def _lazy_table() -> dict[str, str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "_LAZY":
            return ast.literal_eval(node.value)
    raise AssertionError("cacovid/__init__.py has no _LAZY table")


def test_lazy_exports_name_real_modules_and_names():
    import importlib

    import cacovid

    table = _lazy_table()
    assert table == cacovid._LAZY
    for name, module in table.items():
        assert unit_of(module) in RANK, f"{name}: {module} has no layer"
        assert hasattr(importlib.import_module(module), cacovid._ALIASES.get(name, name)), (name, module)
        assert getattr(cacovid, name) is getattr(
            importlib.import_module(module), cacovid._ALIASES.get(name, name)
        )
        assert name in cacovid.__all__


def test_importing_the_package_loads_no_higher_layer():
    import subprocess

    code = (
        "import sys, cacovid\n"
        "print(sorted(m for m in sys.modules if m.startswith('cacovid.')))\n"
        "print('transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, transformers_loaded = out.splitlines()
    assert ast.literal_eval(loaded) == ["cacovid.types"]
    assert transformers_loaded == "False"


_BY_NAME = ("import_module", "__import__")


def test_only_the_package_init_imports_by_name():
    """No other module may import cacovid modules from strings, out of the static check's sight."""
    offenders = []
    for path in MODULES:
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("cacovid")
                and getattr(node.func, "attr", getattr(node.func, "id", ""))
                in ("import_module", "__import__")
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
