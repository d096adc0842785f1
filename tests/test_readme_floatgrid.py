"""The README's float-grid / codes / export examples run as printed."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_float_grid_codes_export_examples_run(capsys):
    text = README.read_text()
    section = text[text.index("## Beyond the poster: float-format grids"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "[1.0, 1.0078125]" in out
