"""A wheel built from the repository holds everything an installed qtrain reads at run time:
every preset of every scale, the C kernel sources and the embedded digits."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qtrain"


def test_wheel_holds_every_preset_and_data_file(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    # build from a clean copy: a build/ folder left in the checkout would hide missing package data
    src = tmp_path / "src_copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("qtrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = [p for pattern in ("experiments/presets/**/*.yaml", "csrc/*.c", "data/*.npz")
              for p in PACKAGE.glob(pattern)]
    assert len([p for p in needed if p.suffix == ".yaml"]) >= 40  # quick, mini and paper presets
    missing = [str(p.relative_to(PACKAGE)) for p in needed if f"qtrain/{p.relative_to(PACKAGE).as_posix()}" not in names]
    assert not missing, f"not in the wheel: {missing[:5]}"
    for scale in ("quick", "mini", "paper"):
        assert any(n.startswith(f"qtrain/experiments/presets/{scale}/") for n in names), scale
