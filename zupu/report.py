"""The tour's report.html: the family tree first, then a card per member, all drawn from report.json.

Every sentence about a run is generated from what the run recorded (its settings, metrics.json, the files
in its directory), so the page cannot contradict what ran. The page is one self-contained file: the tree
is inline SVG, figures are embedded as base64 PNG, a few lines of script enlarge a figure on click; it
works offline and on a phone (viewport meta, one column below 700 px).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import html
import itertools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import zupu
from zupu import registry
from zupu.atomic import atomic_open
from zupu.train.metrics import display_name as human

ROOT = Path(zupu.__file__).resolve().parent
TEXT_LIMIT = 4000  # characters of a samples file shown in a card


def number(value: Any) -> str:
    """A measured number as a reader wants it: three significant digits, no float noise."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60} s"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT.parent), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(report: dict[str, Any]) -> dict[str, str]:
    """Date, commit, hardware and the command that reproduces the tour."""
    from zupu.train.precision import native_bf16

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):  # Linux names the model; elsewhere platform's word stays
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    command = "zupu tour" + (" --quick" if report.get("quick") else "")
    command += "".join(f" --{k} {' '.join(report[k])}" for k in ("only", "skip") if report.get(k))
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit or "not a git checkout",
            "hardware": f"{cpu}, {report.get('cores', os.cpu_count())} usable cores, "
                        f"{'native' if native_bf16() else 'no native'} bfloat16",
            "command": command}


# --- the family tree --------------------------------------------------------------------------------------
NODE_W, NODE_H, GAP, ROW_H, LEFT, TOP = 128, 30, 24, 58, 64, 14


def _crossings(cell: dict[str, tuple[int, int]], at: dict[int, list[int]], parent: str, child: str) -> int:
    """How many other members' boxes a straight arrow from `parent` to `child` would cross."""
    (c0, r0), (c1, r1) = cell[parent], cell[child]
    if r0 == r1:
        return sum(min(c0, c1) < c < max(c0, c1) for c in at[r0])
    hits = 0
    for r in range(min(r0, r1) + 1, max(r0, r1)):
        x = c0 + (c1 - c0) * (r - r0) / (r1 - r0)  # in column widths; a box spans +-0.5 of W / (W + GAP)
        hits += sum(abs(x - c) < 0.5 * NODE_W / (NODE_W + GAP) + 0.1 for c in at.get(r, []))
    return hits


def _rows(cell: dict[str, tuple[int, int]]) -> dict[int, list[int]]:
    at: dict[int, list[int]] = {}
    for c, r in cell.values():
        at.setdefault(r, []).append(c)
    return at


def _blocked(members: list[registry.Member], cell: dict[str, tuple[int, int]]) -> int:
    at = _rows(cell)
    return sum(_crossings(cell, at, p, m.name) for m in members for p in m.parents)


def layout(members: list[registry.Member], columns: int = 3) -> dict[str, tuple[int, int]]:
    """(column, row) per member: a row a year, and within it the columns that keep every arrow clear of other
    members' boxes and short, found by trying each row's arrangements in turn until none improves."""
    years = sorted({m.year for m in members})
    rows = [[m.name for m in members if m.year == y] for y in years]
    columns = max(columns, *(len(r) for r in rows))
    cell = {name: (k, r) for r, row in enumerate(rows) for k, name in enumerate(row)}
    by_name = {m.name: m for m in members}

    def cost() -> float:
        length = sum(abs(cell[p][0] - cell[m.name][0]) for m in members for p in m.parents)
        return 100 * _blocked(members, cell) + length + 0.01 * sum(c for c, _ in cell.values())

    best = cost()
    for _ in range(50):
        improved = False
        for r, row in enumerate(rows):
            for cols in itertools.permutations(range(columns), len(row)):
                before = {n: cell[n] for n in row}
                cell.update({n: (c, r) for n, c in zip(row, cols, strict=True)})
                now = cost()
                if now < best - 1e-9:
                    best, improved = now, True
                else:
                    cell.update(before)
        if not improved:
            break
    assert set(cell) == set(by_name)
    return cell


def tree_svg(status: dict[str, str]) -> str:
    """Members by year (one row a year, as the articles' timeline), arrows from parents; `status` maps a
    member to passed/missed (linked to its card); others are drawn as working-but-not-run or planned."""
    members = registry.members()
    years = sorted({m.year for m in members})
    cell = layout(members)
    x = {n: LEFT + c * (NODE_W + GAP) + NODE_W / 2 for n, (c, _) in cell.items()}
    ypos = {n: TOP + r * ROW_H + NODE_H / 2 for n, (_, r) in cell.items()}
    width = LEFT + (1 + max(c for c, _ in cell.values())) * (NODE_W + GAP)
    height = TOP + len(years) * ROW_H
    parts = [f'<svg class=tree viewBox="0 0 {width:.0f} {height:.0f}" role=img aria-label="the family tree">',
             '<defs><marker id=arrow viewBox="0 0 8 8" refX=8 refY=4 markerWidth=7 markerHeight=7 orient=auto>'
             '<path d="M0,0 L8,4 L0,8 z" fill="#8a8f98"/></marker></defs>']
    for r, y in enumerate(years):
        cy = TOP + r * ROW_H + NODE_H / 2
        parts.append(f'<text class=year x=4 y="{cy + 4:.0f}">{y}</text>'
                     f'<line class=rule x1={LEFT - 8} x2="{width:.0f}" y1="{cy:.0f}" y2="{cy:.0f}"/>')
    at = _rows(cell)
    for k, (m, p) in enumerate((c, p) for c in members for p in c.parents):
        (x0, y0), (x1, y1) = (x[p], ypos[p]), (x[m.name], ypos[m.name])
        s = 1 if y1 >= y0 else -1
        if y0 == y1:  # same year: side to side
            s = 1 if x1 > x0 else -1
            d = f"M{x0 + s * NODE_W / 2:.1f},{y0:.1f} L{x1 - s * NODE_W / 2:.1f},{y1:.1f}"
        elif not _crossings(cell, at, p, m.name):  # straight, from the parent's edge to the child's
            t = min(NODE_H / 2 / abs(y1 - y0), NODE_W / 2 / abs(x1 - x0) if x1 != x0 else 1)  # to the box's rim
            d = (f"M{x0 + (x1 - x0) * t:.1f},{y0 + (y1 - y0) * t:.1f} "
                 f"L{x1 - (x1 - x0) * t:.1f},{y1 - (y1 - y0) * t:.1f}")
        else:  # around the boxes: out between the rows, down the gap between two columns, back in
            col = round((cell[p][0] + cell[m.name][0] + 1) / 2)
            gx = LEFT + col * (NODE_W + GAP) - GAP / 2 + (k % 3 - 1) * 4
            ya, yb = y0 + s * (ROW_H / 2), y1 - s * (ROW_H / 2)
            d = (f"M{x0:.1f},{y0 + s * NODE_H / 2:.1f} L{x0:.1f},{ya:.1f} L{gx:.1f},{ya:.1f} L{gx:.1f},{yb:.1f} "
                 f"L{x1:.1f},{yb:.1f} L{x1:.1f},{y1 - s * NODE_H / 2:.1f}")
        parts.append(f'<path class=edge d="{d}" marker-end="url(#arrow)"/>')
    for m in members:
        cls = status.get(m.name) or ("notrun" if m.works else "planned")
        note = {"passed": "milestone passed", "missed": "milestone missed", "notrun": "works; not in this tour",
                "planned": "planned"}[cls]
        box = (f'<rect x="{x[m.name] - NODE_W / 2:.0f}" y="{ypos[m.name] - NODE_H / 2:.0f}" width="{NODE_W}" '
               f'height="{NODE_H}" rx="7"/><text x="{x[m.name]:.0f}" y="{ypos[m.name] + 5:.0f}">{html.escape(m.name)}'
               f'</text><title>{html.escape(f"{m.name} ({m.year}): {m.paper}. {note}")}</title>')
        if m.name in status:
            parts.append(f'<a class="node {cls}" href="#m-{m.name}" data-member="{m.name}">{box}</a>')
        else:
            parts.append(f'<g class="node {cls}">{box}</g>')
    parts.append("</svg>")
    return "".join(parts)


# --- the cards --------------------------------------------------------------------------------------------
def _img(out: Path, rel: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode()
    stem = Path(rel).stem
    caption = "training curves" if stem == "curves" else stem.replace("_", " ")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'title="click to enlarge"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _text(out: Path, rel: str) -> str:
    text = (out / rel).read_text(encoding="utf-8", errors="replace")
    more = f"\n… ({len(text) - TEXT_LIMIT:,} more characters in {rel})" if len(text) > TEXT_LIMIT else ""
    return (f"<h4>{html.escape(Path(rel).stem.replace('_', ' '))}</h4>"
            f"<pre class=sample>{html.escape(text[:TEXT_LIMIT])}{html.escape(more)}</pre>")


def _benchmarks(member: str, recipe: str) -> list[tuple[str, str]]:
    """(path, date) of the benchmarks' RESULTS files with a line naming this member's recipe (in a checkout)."""
    found = []
    for path in sorted((ROOT.parent / "benchmarks").glob("RESULTS-*.md")):
        if path.name == "RESULTS-busy-core.md":  # times every recipe beside a busy core: no recipe's result
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if any(member in line and recipe in line for line in lines):
            stamp = next((line for line in lines if line.startswith("<!-- benchmark-")), "")
            try:
                date = json.loads(stamp.split(" ", 2)[2].rsplit("-->", 1)[0]).get("finished", "")
            except (IndexError, ValueError):
                date = ""
            found.append((str(path), date))
    return found


def _milestone_rows(e: dict[str, Any], recipe: Any) -> str:
    ms, full = e["milestone"], recipe.milestone
    verdict = "passed" if ms["passed"] else "missed"
    rows = [f"<tr><th>this run</th><td>{html.escape(human(ms['name']))} {ms['op']} {number(ms['target'])}</td>"
            f"<td>measured <b>{number(ms['value'])}</b></td><td class={verdict}>{verdict}</td></tr>"]
    if e.get("quick") and recipe.quick_milestone is not None:  # judged by its own budget: show the full one too
        op = ">=" if full.higher_is_better else "<="
        paper = f" ({html.escape(full.paper)})" if full.paper else ""
        rows.append(f"<tr><th>the full recipe</th><td>{html.escape(human(full.metric))} {op} {number(full.target)}"
                    f"{paper}</td><td colspan=2>not this run: <code>zupu train {e['name']} --recipe "
                    f"{html.escape(e['recipe'])}</code></td></tr>")
    elif ms.get("paper"):
        rows.append(f"<tr><th>the paper</th><td colspan=3>{html.escape(ms['paper'])}</td></tr>")
    for path, date in _benchmarks(e["name"], e["recipe"]):
        rows.append(f"<tr><th>benchmark</th><td colspan=3><a href=\"{Path(path).as_uri()}\">"
                    f"{html.escape(Path(path).name)}</a>{' of ' + html.escape(date) if date else ''} "
                    "(a separate run, not this one)</td></tr>")
    return f"<div class=scroll><table class=ms>{''.join(rows)}</table></div>"  # a phone scrolls it, not the page


def _settings(e: dict[str, Any]) -> str:
    items = "".join(f"<li{' class=changed' if k in e.get('quick', {}) else ''}><code>{html.escape(k)} = "
                    f"{html.escape(json.dumps(v, ensure_ascii=False))}</code></li>"
                    for k, v in e.get("settings", {}).items())
    changed = " (quick changes in bold)" if e.get("quick") else ""
    return f"<details><summary>settings this run used{changed}</summary><ul class=settings>{items}</ul></details>"


def _recipe_card(out: Path, e: dict[str, Any], m: registry.Member) -> str:
    recipe = m.recipe(e["recipe"])
    ms = e["milestone"]
    verdict = "passed" if ms["passed"] else "missed"
    other = ", ".join(f"{html.escape(human(k))} {number(v)}" for k, v in e.get("metrics", {}).items()
                      if k != ms["name"])
    err = f"<pre class=err>{html.escape(e['error'])}</pre>" if e.get("error") else ""
    run = {"done": " · reused from an earlier run", "resume": " · resumed"}.get(e.get("run", ""), "")
    figures = "".join(_img(out, f) for f in e.get("figures", []))
    texts = "".join(_text(out, t) for t in e.get("texts", []))
    quick = " --quick" if e.get("quick") else ""
    code = [ROOT / "models" / f"{m.module_name}.py", ROOT / "models" / m.module_name / "__init__.py",
            ROOT / "recipes" / f"{m.module_name}.py"]
    links = " · ".join(f'<a href="{p.as_uri()}">{html.escape(str(p.relative_to(ROOT.parent)))}</a>'
                       for p in code if p.is_file())
    return (f'<section class=recipe id="r-{m.name}-{html.escape(e["recipe"])}">'
            f'<h3>{html.escape(e["recipe"])} <span class="badge {verdict}">{verdict}</span>'
            f'<span class=secs>{duration(e["seconds"])}{run}</span></h3>'
            f"<p>{html.escape(recipe.summary)} <span class=note>(the recipe at its full settings)</span></p>"
            f"{_milestone_rows(e, recipe)}{err}"
            f"{f'<p class=metrics>also measured: {other}</p>' if other else ''}{_settings(e)}"
            f"<div class=figs>{figures}</div>{texts}"
            f"<p class=repro>reproduce: <code>zupu train {m.name} --recipe {html.escape(e['recipe'])}{quick}</code>"
            f"<br>code: {links}</p></section>")


def _member_card(out: Path, m: registry.Member, entries: list[dict[str, Any]]) -> str:
    parents = ", ".join(f'<a href="#m-{p}">{p}</a>' for p in m.parents)
    return (f'<article class=member id="m-{m.name}"><h2>{html.escape(m.name)} <span class=yr>{m.year}</span></h2>'
            f'<p class=paper><a href="{html.escape(m.url)}">{html.escape(m.paper)}</a> — {html.escape(m.authors)}</p>'
            f"<p class=claim>{html.escape(m.summary)}.{f' Parents: {parents}.' if parents else ''}</p>"
            f"{''.join(_recipe_card(out, e, m) for e in entries)}</article>")


CSS = """
:root{--ok:#1a7f37;--bad:#c4262e;--ink:#1f2328;--muted:#59636e}
*{box-sizing:border-box}body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans CJK SC",
"WenQuanYi Micro Hei",sans-serif;color:var(--ink);margin:0 auto;max-width:1200px;padding:0 16px 48px}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{margin:0 0 .2em}h3{margin:1.2em 0 .4em;font-size:1.1em}
.meta{color:var(--muted);font-size:.9em;margin:.2em 0}.meta code{white-space:normal}
svg.tree{width:100%;max-width:560px;height:auto;display:block;margin:12px auto}
.tree text{font-size:13px;text-anchor:middle;fill:var(--ink)}.tree text.year{text-anchor:start;fill:var(--muted);
font-size:12px}.tree .rule{stroke:#eaeef2}.tree .edge{fill:none;stroke:#8a8f98;stroke-width:1.2}
.tree rect{fill:#fff;stroke:#8a8f98;stroke-width:1.4}.tree .passed rect{fill:#dafbe1;stroke:var(--ok)}
.tree .missed rect{fill:#ffebe9;stroke:var(--bad)}.tree .planned rect{stroke-dasharray:4 3;fill:#f6f8fa}
.tree .planned text,.tree .notrun text{fill:var(--muted)}.tree a{cursor:pointer}.tree a:hover rect{stroke-width:2.5}
.legend{text-align:center;font-size:.85em;color:var(--muted)}.legend span{margin:0 .6em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9em}td,th{padding:4px 8px;
border-bottom:1px solid #d1d9e0;text-align:left;vertical-align:top}
table.summary td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:var(--ok);font-weight:600}.missed{color:var(--bad);font-weight:600}
.badge{font-size:.75em;padding:1px 8px;border-radius:10px;margin-left:.5em;border:1px solid currentColor}
.secs{font-size:.75em;color:var(--muted);font-weight:normal;margin-left:.6em}
article.member{border-top:2px solid #d1d9e0;margin-top:2.2em;padding-top:1em;scroll-margin-top:8px}
.paper{font-style:italic;color:var(--muted);margin:.2em 0}.claim{margin:.3em 0}.note,.metrics{color:var(--muted);
font-size:.9em}table.ms th{font-weight:normal;color:var(--muted);white-space:nowrap}
ul.settings{columns:3 220px;font-size:.85em;margin:.4em 0}ul.settings .changed{font-weight:700}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px;margin:.8em 0}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #d1d9e0;border-radius:4px;cursor:zoom-in}
figcaption{font-size:.8em;color:var(--muted)}pre{overflow-x:auto;background:#f6f8fa;padding:8px;font-size:.85em;
white-space:pre-wrap;max-height:24em}pre.err{background:#ffebe9}.repro{font-size:.9em}
dialog{max-width:96vw;max-height:96vh;padding:4px;border:0}dialog img{max-width:94vw;max-height:92vh;display:block}
dialog::backdrop{background:rgba(0,0,0,.6)}
@media (max-width:700px){body{font-size:15px;padding:0 10px 32px}.figs{grid-template-columns:1fr}}
"""
SCRIPT = """
const zoom=document.getElementById('zoom');
document.querySelectorAll('figure img').forEach(img=>img.addEventListener('click',()=>{
  zoom.querySelector('img').src=img.src;zoom.querySelector('img').alt=img.alt;zoom.showModal();}));
zoom.addEventListener('click',()=>zoom.close());
"""


def write_html(out: Path, report: dict[str, Any]) -> None:
    """report.html in `out` from report.json's dict and the run directories under `out`."""
    entries = report["members"]
    by_member: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_member.setdefault(e["name"], []).append(e)
    status = {n: "passed" if all(e["milestone"]["passed"] for e in es) else "missed" for n, es in by_member.items()}
    rows = []
    for e in entries:
        ms = e["milestone"]
        verdict = "passed" if ms["passed"] else "missed"
        rows.append(f'<tr><td><a href="#r-{e["name"]}-{html.escape(e["recipe"])}">{html.escape(e["name"])}</a></td>'
                    f"<td>{html.escape(e['recipe'])}</td><td>{html.escape(human(ms['name']))}</td>"
                    f"<td class=num>{number(ms['value'])}</td><td class=num>{ms['op']} {number(ms['target'])}</td>"
                    f"<td class={verdict}>{verdict}</td><td class=num>{duration(e['seconds'])}</td></tr>")
    passed = sum(e["milestone"]["passed"] for e in entries)
    p = provenance(report)
    members = sorted((registry.get(n) for n in by_member), key=lambda m: (m.year, m.name))
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><title>zupu tour — the family tree, run</title>
<style>{CSS}</style></head><body>
<h1>zupu (族谱): the neural-network family tree, run</h1>
<p class=meta><b class={'passed' if passed == len(entries) else 'missed'}>{passed} of {len(entries)} milestones
reached</b> in {duration(report['seconds'])}{' at the quick settings' if report.get('quick') else ''}.
Click a member to read its card.</p>
{tree_svg(status)}
<p class=legend><span class=passed>■ passed</span><span class=missed>■ missed</span><span>□ works, not in this
tour</span><span>┆ planned</span></p>
<div class=scroll><table class=summary><tr><th>member</th><th>recipe</th><th>milestone</th><th>measured</th>
<th>target</th><th></th><th>time</th></tr>{''.join(rows)}</table></div>
<p class=meta>{html.escape(p['date'])} · commit {html.escape(p['commit'])} · {html.escape(p['hardware'])}<br>
reproduce: <code>{html.escape(p['command'])}</code></p>
{''.join(_member_card(out, m, by_member[m.name]) for m in members)}
<dialog id=zoom><img alt=""></dialog><script>{SCRIPT}</script></body></html>"""
    with atomic_open(out / "report.html", "w") as f:
        f.write(page)
