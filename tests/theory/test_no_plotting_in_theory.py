"""Theory code computes; figures are drawn by the callers (qtrain.plots.theory.draw).

No module under qtrain/theory imports qtrain.plots or matplotlib, not even lazily, and a theory
run with an output folder writes its JSON without loading matplotlib.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qtrain
import qtrain.theory

THEORY = Path(qtrain.theory.__file__).parent
FORBIDDEN = ("qtrain.plots", "matplotlib")


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imports(path: Path, package):
    """Absolute names of every module ``path`` imports anywhere (top level or inside functions),
    relative imports resolved against ``package`` (a list of names), plus the string arguments of
    ``importlib.import_module`` / ``__import__`` calls."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)  # from .. import plots
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                yield str(node.args[0].value)


def test_resolver_sees_lazy_and_relative_imports(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("def run():\n    from ..plots.theory import plot_toy\n    from .. import plots\n"
                 "    import matplotlib.pyplot as plt\n    importlib.import_module('qtrain.plots')\n")
    names = set(_imports(f, ["qtrain", "theory"]))
    assert {"qtrain.plots.theory", "qtrain.plots", "matplotlib.pyplot"} <= names
    assert all(_forbidden(n) for n in ("qtrain.plots.theory", "qtrain.plots", "matplotlib.pyplot"))
    assert not _forbidden("qtrain.plotsx") and not _forbidden("qtrain.theory")


@pytest.mark.parametrize("path", sorted(THEORY.rglob("*.py")), ids=lambda p: p.name)
def test_theory_source_imports_no_plotting(path):
    package = list(path.relative_to(THEORY.parent.parent).parts[:-1])  # ["qtrain", "theory", ...]
    bad = sorted({n for n in _imports(path, package) if _forbidden(n)})
    assert not bad, f"{path.relative_to(THEORY.parent)} imports {bad}: draw figures in the caller (qtrain.plots)"


RUN = """
import json, sys
from qtrain.theory import convex, convex_float, markov, toy
out = sys.argv[1]
toy.run(out, seed=0, lrs=[0.1], iters=2_000)
convex.run(out, seed=0, quick=True, T=200, seeds=2, deltas=[0.25], problems=["quadratic"])
convex_float.run(out, quick=True, T=50, seeds=2, formats=["float8_e5m2"], problems=["quadratic"])
markov.run(out, seed=0, quick=True, alphas=[0.1], sim_steps=2_000, product_d=1)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib" or m.startswith("qtrain.plots"))))
"""


def test_theory_runs_do_not_import_matplotlib(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(qtrain.__file__).parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["convex.json", "convex_float.json", "markov.json", "toy.json"], names
