"""The README's Python quick start runs as printed, and its two set-up commands exist."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    model = scope["model"]
    for p in (m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        assert torch.equal(p.abs(), torch.full_like(p, 0.05))


def test_setup_commands_are_the_scripts_ci_runs():
    text = README.read_text()
    assert "bash scripts/quick.sh" in text and "bash scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
