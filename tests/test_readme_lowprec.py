"""The README's dynamic-grid and low-precision-state examples run as printed."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(title):
    text = README.read_text()
    section = text[text.index(f"## {title}"):]
    section = section[:section.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_dynamic_grid_example_runs(capsys):
    blocks = _blocks("Dynamic grids (BitNet-style ternary)")
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip().endswith("True")
    assert scope["opt"].step_count == 20 and scope["opt"].dynamic


def test_low_precision_state_example_runs(capsys):
    blocks = _blocks("Low-precision training that saves memory")
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip() == "['torch.bfloat16']"
    assert scope["opt"].state_dtype is scope["torch"].bfloat16
