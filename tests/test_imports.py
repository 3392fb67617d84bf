"""Every module of the package imports on its own, first, in a fresh interpreter.

Why: inside one test session modules are imported in whatever order the tests happen to use, which
hides circular imports (a module that imports, through others, a module that imports it back) that
break a user's very first `import`. `test_layers.py` checks the direction of every import statically.
"""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import importlib, pkgutil, sys
import cacovid
names = sorted(m.name for m in pkgutil.walk_packages(cacovid.__path__, "cacovid.")
               if not m.name.endswith("__main__"))
bad = []
for name in names:
    for key in [k for k in sys.modules if k == "cacovid" or k.startswith("cacovid.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as exc:
        bad.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_every_module_imports_first():
    res = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert int(res.stdout.split()[0]) > 40  # the walk found the package's modules
