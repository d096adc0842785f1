"""The README's dynamic-grid example runs as printed."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_dynamic_grid_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Dynamic grids (BitNet-style ternary)"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip().endswith("True")
    assert scope["opt"].step_count == 20 and scope["opt"].dynamic
