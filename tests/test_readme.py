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


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end > 0 else None]


def _numbers(text: str) -> list:
    return [x.replace(",", "") for x in re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text)]


def test_every_snippet_prints_what_its_comment_says(capsys):
    """Each ``print(...)`` of each Python snippet carries a comment; every number it prints must
    appear there (to the digits the comment gives, e.g. ``~1.00195``)."""
    checked = 0
    for code in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        if "init_process_group" in code:  # the FSDP example runs under torchrun (tests/test_sharded.py)
            continue
        prints = [line for line in code.splitlines() if line.lstrip().startswith("print(")]
        assert all("#" in line for line in prints), f"a print without a comment saying what it prints: {prints}"
        comments = [line.split("#", 1)[1] for line in prints]
        exec(compile(code, "README.md", "exec"), {})
        printed = capsys.readouterr().out.strip().splitlines()
        assert len(printed) == len(comments), (printed, comments)
        for out, comment in zip(printed, comments):
            claimed = _numbers(comment)
            for value in _numbers(out):
                def close(c):
                    places = len(c.split(".")[1]) if "." in c else 0
                    return abs(float(value) - float(c)) <= 0.5 * 10 ** -places + 1e-12
                assert any(close(c) for c in claimed), f"printed {value} is not in the comment: {comment.strip()}"
                checked += 1
    assert checked >= 5  # the float-grid and export snippets print 4 numbers


def test_paper_and_ours_section_matches_the_presets():
    import yaml

    text = " ".join(_section("What is the paper's and what is ours").split())
    presets = README.parent / "src" / "qtrain" / "experiments" / "presets"
    for scale in ("mini", "quick"):
        cfgs = {p.stem.split(".")[1]: yaml.safe_load(p.read_text()) for p in (presets / scale).glob("*.yaml")}
        sr, big = cfgs["sr-adam"], cfgs["big-sr-adam"]
        assert {c["width"] for c in cfgs.values()} == {sr["width"]} and f"width {sr['width']}" in text
        assert f"{sr['epochs']} epochs, batch {sr['batch_size']}" in text, scale
        assert f"lr {sr['lr']:g} ÷10 at epochs {sr['lr_milestones'][0]} and {sr['lr_milestones'][1]}" in text, scale
        assert all(c["threads"] == 1 for c in cfgs.values()) and "threads: 1" in text
    mini = yaml.safe_load((presets / "mini" / "c10-smallcnn.big-sr-adam.yaml").read_text())
    assert f"first {mini['train_subset']:,} training images" in text
    assert f"batch of {mini['batch_size']} is accumulated in chunks of {mini['micro_batch']}" in text
    assert mini["latent_init"] == "uniform" and mini["lr_scale"] == "glorot" and mini["scale"] == 1.0
    quick_big = yaml.safe_load((presets / "quick" / "digits-smallcnn.big-sr-adam.yaml").read_text())
    assert f"(Big SR-ADAM {quick_big['batch_size']})" in text
    paper = yaml.safe_load((presets / "paper" / "c10-vgg9.sr-adam.yaml").read_text())
    assert f"CIFAR {paper['epochs']} epochs with batch {paper['batch_size']}" in text and f"lr {paper['lr']:g}" in text
