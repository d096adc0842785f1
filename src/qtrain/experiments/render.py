r"""The reproduction report as Markdown, and the same text as HTML.

:func:`to_html` converts the small Markdown subset :func:`markdown` writes (headings, paragraphs,
bullet lists, pipe tables, images, ``**bold**`` and ``code``), so ``report.html`` holds exactly
what ``report.md`` does; given the report's folder, it embeds the figures as ``data:`` URIs, so the
page still shows them when it is moved or mailed alone.

>>> page = to_html("# T\n\n- **a** `b`\n\n| x | y |\n|---|---|\n| 1 | 2 |", "t")
>>> [tag in page for tag in ("<h1>T</h1>", "<li><b>a</b> <code>b</code></li>", "<th>x</th>", "<td>2</td>")]
[True, True, True, True]
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import List, Optional

from .columns import agreement_lines
from .runs import provenance_text
from .table1 import seeds_text, table
from .verdicts import headline as _headline


def headline(report: dict) -> str:
    """Table 1's count and the theory's count, on separate lines (reports before them: all claims)."""
    if "table1_counts" not in report:
        return f"**{_headline(report)}.**"
    return (f"**{_headline(report['table1_counts'], 'Table 1 claims')}.**\n\n"
            f"**{_headline(report['theory_counts'], 'theory checks (deterministic)')}.**")


def machine_prose(report: dict) -> str:
    m, t1 = report["machine"], report["table1"]
    if report.get("report_only"):
        return (f"Rewritten on host {m['host']}, {m['cpu']} CPU (capability {m.get('capability', '?')}); torch "
                f"{m['torch']}, Python {m['python']}, qtrain {m['qtrain']}.")
    threads = sorted({c["threads"] for c in report["table1_cells"]}, key=str)
    per_run = ", ".join("torch's default" if t is None else str(t) for t in threads) or "–"
    return (f"Machine: host {m['host']}, {m['cpu']} CPU"
            + (f" (capability {m['capability']})" if m.get("capability") else "") + f" with {m.get('cores', '?')} cores"
            + (f" and a {m['cuda']} GPU" if m.get("cuda") else ", no GPU")
            + f"; torch {m['torch']}, Python {m['python']}, qtrain {m['qtrain']}. The theory parts ran with "
            f"{m['threads']} torch threads; Table 1 ran in {t1['workers']} worker process(es) with {per_run} torch "
            f"thread(s) per run.")


def wall_time(report: dict) -> str:
    t1 = report["table1"]
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    if report.get("report_only"):
        return (f"Rewritten with `--report-only` from the theory records and the finished runs in {report['wall_seconds']:.0f} s "
                f"({report['finished']}); nothing was trained or computed again. The runs' own times are in their "
                "`summary.json`.")
    text = f"Wall time {report['wall_seconds']:.0f} s ({parts})"
    text += f", from {report['started']} to {report['finished']}." if report.get("started") else "."
    if t1["runs_reused"]:
        text += (f" Table 1 reused {t1['runs_reused']} finished run(s) from an earlier invocation (their "
                 f"{t1['reused_seconds']:.0f} s of training are not in this wall time) and trained {t1['runs_trained']}.")
    else:
        text += f" Table 1 trained all {t1['runs_trained']} run(s) now (none reused)."
    return text


def _verdict(c: dict) -> str:
    return f"**{c['verdict']}**" if c["verdict"] else "no verdict"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(report: dict) -> str:
    seeds = sorted({tuple(c["seeds"]) for c in report["table1_cells"]})
    lines = [f"# qtrain reproduction report ({report['scale']} scale)", "", headline(report), "",
             wall_time(report), "", machine_prose(report), ""]
    if report.get("run_machines") is not None:
        lines += [provenance_text(report["run_machines"]), ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    caveat = ([] if report["scale"] == "paper" else
              [f"The {report['scale']} scale trains other models on other data than the poster (its columns are "
               "named in the table): **compare orderings, not values**, with the poster's numbers.", ""])
    lines += [f"Settings: theory seed {report['seed']}; Table 1 with {report['seeds']} seed(s) per cell "
              f"({seeds_text(seeds[0]) if len(seeds) == 1 else 'seeds vary by cell'}; seed = preset seed + k), "
              f"verdicts by one-sided tests at level {report['alpha']}"
              + (f"; Table 1 overrides {report['overrides']}" if report.get("overrides") else "")
              + "".join(f"; {c} {n} seeds" for c, n in report["table1"].get("seeds_per_cell", {}).items()) + ".", "",
              "## Table 1", "", "Top-1 test error (%), mean ± SE over seeds.", ""] + caveat
    missing = report["table1"].get("missing") or []
    if missing:
        lines += [f"**Partial Table 1**: {len(missing)} requested run(s) not finished (`table1/table1.md` lists them; "
                  "the same command without --report-only trains them).", ""]
    lines += table({"cells": report["table1_cells"]})
    by_protocol = agreement_lines({"cells": report["table1_cells"], "claims": report["claims"]})
    if by_protocol:
        lines += ["", "## Table 1 verdicts by protocol", ""] + by_protocol
    lines += ["", "## Claims", ""] + caveat + ["| claim | source | measured | poster | verdict |", "|---|---|---|---|---|"]
    for c in report["claims"]:
        lines.append(f"| {_cell(c['claim'])} | {_cell(c['source'])} | {_cell(c['measured'])} | {_cell(c['poster'])} | "
                     f"{_verdict(c)} |")
    lines += ["", "## Claims one by one", ""]
    for c in report["claims"]:
        lines += [f"### {c['claim']}", "", f"- Verdict: {_verdict(c)} (rule [choice]: {c['rule']})",
                  f"- Measured: {c['measured']}"]
        if c.get("effect"):
            lines.append(f"- Effect: {c['effect']}")
        if c.get("reason"):
            lines.append(f"- No verdict because: {c['reason']}")
        if c.get("mde_pairs"):
            lines.append("- Power: the smallest difference each pair's test detects with 80% power at its level "
                         "(these seeds, the spreads measured): "
                         + ", ".join(f"{k} {v:.2f} points" for k, v in c["mde_pairs"].items()))
        elif c.get("mde") is not None:
            lines.append(f"- Power: the smallest difference this test detects with 80% power at its level "
                         f"(these seeds, the spreads measured): {c['mde']:.2f} points")
        lines += [f"- Poster: {c['poster']} ({c['source']})", "", f"![{c['id']}]({c['figure']})", ""]
    lines += ["Details: `theory/*.json`, `table1/table1.md`, `table1/table1.json`, `table1/runs/*/seed*/metrics.jsonl`."]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    text = html.escape(text, quote=False).replace("\\|", "|")
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _row(line: str) -> List[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _image_src(src: str, base: Optional[Path]) -> str:
    """``src`` as a ``data:`` URI when ``base / src`` is a readable PNG/SVG/JPEG, else as it is."""
    kinds = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    path = None if base is None else Path(base) / src
    if path is None or path.suffix.lower() not in kinds or not path.is_file():
        return src
    return f"data:{kinds[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def to_html(md: str, title: str, base: Optional[Path] = None) -> str:
    """HTML of the Markdown subset :func:`markdown` writes; images found under ``base`` are embedded
    (each once; a figure named again links to its first place)."""
    out, lines, i = [], md.splitlines(), 0
    shown: dict = {}  # image path -> its anchor: each figure is embedded once, later mentions link to it
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"(#{1,3}) (.*)", line):
            out.append(f"<h{len(m[1])}>{_inline(m[2])}</h{len(m[1])}>")
        elif (m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line)) and m[2] in shown:
            out.append(f"<p><a href='#{shown[m[2]]}'>{html.escape(m[1] or m[2])} (figure above)</a></p>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            shown[m[2]] = f"fig{len(shown) + 1}"
            out.append(f"<p><img id='{shown[m[2]]}' alt='{html.escape(m[1])}' "
                       f"src='{html.escape(_image_src(m[2], base))}' style='max-width:100%'></p>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_row(lines[i]))
                i += 1
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[2:])
            out.append("<table border=1 cellpadding=4 style='border-collapse:collapse'><tr>"
                       + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + f"</tr>{body}</table>")
            continue
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>\n"
            f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'>\n" + "\n".join(out) + "\n</body>\n")


def bn_reestimate_markdown(rows: List[dict], cells: List[dict]) -> str:
    """``qtrain bn-reestimate``'s report: per cell, test error (%) with the stored BN statistics and
    with statistics re-estimated for the final weights (mean ± SE, sd over seeds), then per run."""
    def pm(m, se):
        return f"{m:.2f}" if se != se else f"{m:.2f} ± {se:.2f}"  # se is nan for one seed

    def sd(x):
        return "–" if x != x else f"{x:.2f}"

    out = ["| cell | seeds | stored BN statistics | sd | re-estimated | sd | change |", "|---|---|---|---|---|---|---|"]
    out += [f"| {c['cell']} | {', '.join(map(str, c['seeds']))} | {pm(c['stored_mean'], c['stored_se'])} | "
            f"{sd(c['stored_sd'])} | {pm(c['reestimated_mean'], c['reestimated_se'])} | {sd(c['reestimated_sd'])} | "
            f"{c['change']:+.2f} |" for c in cells]
    out += ["", "| run | epoch | recorded | stored | re-estimated | stored = recorded | measured on |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r['cell']} seed {r['seed']} | {r['epoch']} | "
            f"{'–' if r['recorded'] is None else format(r['recorded'], '.2f')} | {r['stored']:.2f} | "
            f"{r['reestimated']:.2f} | {'yes' if r['matches_record'] else 'no'} | {r.get('cpu') or 'not recorded'} |"
            for r in rows]
    return "\n".join(out) + "\n"
