"""`zupu tour`: run every working member's recipes and write one report with figures.

report.json follows the contract in DESIGN.md; report.html is self-contained (figures embedded as
base64 PNG), so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from zupu import registry
from zupu.atomic import atomic_open, write_json
from zupu.errors import ZupuError
from zupu.train.launch import train
from zupu.train.plots import save


def family_tree_figure(path: Path) -> None:
    """Members by year, one lane per era, arrows from parents; filled dots are members that work."""
    members = registry.members()
    pos: dict[str, tuple[float, float]] = {}
    lanes = {registry.ERAS[2]: 6}  # the crowded modern era gets more rows
    top = 0.0
    lane_centres = []
    for era in registry.ERAS:
        row = sorted((m for m in members if m.era == era), key=lambda m: m.year)
        n = lanes.get(era, 3)
        for k, m in enumerate(row):
            pos[m.name] = (m.year, top - (k % n) * 0.9)
        lane_centres.append(top - (n - 1) * 0.45)
        top -= n * 0.9 + 0.6
    fig, ax = plt.subplots(figsize=(13, 7.5))
    for m in members:
        for p in m.parents:
            (x0, y0), (x1, y1) = pos[p], pos[m.name]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8})
    for m in members:
        x, y = pos[m.name]
        ax.scatter([x], [y], s=90, zorder=3, color="C2" if m.works else "white", edgecolors="C2")
        ax.annotate(m.name, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_yticks(lane_centres, registry.ERAS)
    ax.set_xlabel("year")
    ax.set_title("the family tree (filled: works in zupu, hollow: planned)")
    ax.grid(axis="x", alpha=0.3)
    save(fig, path)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">' \
           f"<figcaption>{html.escape(path.name)}</figcaption></figure>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _verdict(e: dict[str, Any]) -> tuple[str, str]:
    """(row class, mark): a quick run below its full recipe's target is shown as such, not as a failure."""
    if e["milestone"]["passed"]:
        return "pass", "✓"
    if e.get("quick") and not e.get("error"):
        return "short", "✗ quick"
    return "fail", "✗"


def write_html(out: Path, entries: list[dict[str, Any]], seconds: float) -> None:
    rows, sections = [], []
    for e in entries:
        ms = e["milestone"]
        cls, ok = _verdict(e)
        settings = ", ".join(f"{k}={v}" for k, v in e.get("quick", {}).items()) or "full recipe"
        rows.append(
            f"<tr class={cls}><td>{e['year']}</td><td>{html.escape(e['name'])}</td>"
            f"<td>{html.escape(e['recipe'])}</td><td>{html.escape(settings)}</td><td>{html.escape(ms['name'])}</td>"
            f"<td>{_fmt(ms['value'])}</td><td>{ms.get('op', '')} {_fmt(ms['target'])}</td><td>{ok}</td>"
            f"<td>{html.escape(ms.get('paper', ''))}</td><td>{_fmt(e['seconds'])}</td></tr>")
        figs = "".join(_img(out / f) for f in e.get("figures", []))
        metrics = ", ".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in e.get("metrics", {}).items())
        err = f"<pre class=err>{html.escape(e['error'])}</pre>" if e.get("error") else ""
        sections.append(
            f"<section><h2>{e['year']} · {html.escape(e['name'])} · {html.escape(e['recipe'])}</h2>"
            f"<p class=paper>{html.escape(e['paper'])} — {html.escape(e['authors'])}</p>"
            f"<p>{html.escape(e['summary'])}</p><p class=metrics>{metrics}</p>{err}<div class=figs>{figs}</div>"
            "</section>")
    passed = sum(e["milestone"]["passed"] for e in entries)
    short = sum(_verdict(e)[0] == "short" for e in entries)
    runs, their = ("runs", "their") if short > 1 else ("run", "its")
    quick_note = (f" {short} quick {runs} ended below {their} target: the targets are the full recipes', and "
                  "the settings column says how each run was shortened; <code>zupu tour</code> without --quick "
                  "(or <code>zupu train MEMBER --recipe R</code>) runs the full recipe." if short else "")
    page = f"""<!doctype html><html lang=en><meta charset=utf-8><title>zupu tour</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;width:100%;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:4px 6px;
text-align:left}}tr.fail td{{background:#fff0f0}}tr.short td{{background:#fff8e6}}tr.pass td:nth-child(8){{color:#080}}
.figs{{display:flex;flex-wrap:wrap;gap:12px}}figure{{margin:0}}img{{max-width:540px;border:1px solid #eee}}
figcaption{{font-size:12px;color:#666}}.paper{{color:#555;font-style:italic}}.metrics{{font-size:12px;color:#444}}
.err{{background:#fee;padding:8px;overflow:auto}}section{{margin-top:2em}}</style>
<h1>zupu (族谱) tour — the neural-network family tree, run</h1>
<p>{passed} of {len(entries)} milestones reached in {seconds:.0f} s on this machine.{quick_note}</p>
{_img(out / "family_tree.png")}
<table><tr><th>year</th><th>member</th><th>recipe</th><th>settings</th><th>milestone</th><th>value</th><th>target</th><th></th>
<th>the paper / reference</th><th>s</th></tr>{''.join(rows)}</table>{''.join(sections)}</html>"""
    with atomic_open(out / "report.html", "w") as f:
        f.write(page)


def tour(out: str | Path = "tour", quick: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in only or []:
        registry.get(name)  # unknown names fail before hours of work, not after
    chosen = [m for m in registry.members() if m.works and (not only or m.name in only)]
    jobs = [(m, r) for m in sorted(chosen, key=lambda m: m.year) for r in m.recipes().values() if r.in_tour]
    started, entries = time.perf_counter(), []
    family_tree_figure(out / "family_tree.png")
    for i, (m, r) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {m.name} · {r.name}: {r.summary}", file=sys.stderr, flush=True)
        run_dir = out / m.name / r.name
        entry = {"name": m.name, "recipe": r.name, "year": m.year, "paper": m.paper, "authors": m.authors,
                 "summary": r.summary, "quick": dict(r.quick) if quick else {}}
        t0 = time.perf_counter()
        try:
            result = train(m.name, r.name, run_dir, seed=0, quick=quick)
            entry.update(milestone=result["milestone"], metrics=result["metrics"], seconds=result["seconds"])
        except (ZupuError, Exception) as e:  # one broken member must not sink the whole report
            entry.update(milestone={**r.milestone_for(quick).judge({}), "passed": False}, metrics={},
                         seconds=round(time.perf_counter() - t0, 2),
                         error="".join(traceback.format_exception_only(type(e), e)).strip())
            print(f"    failed: {entry['error']}", file=sys.stderr)
        entry["figures"] = sorted(str(p.relative_to(out)) for p in run_dir.glob("*.png")) if run_dir.exists() else []
        ms = entry["milestone"]
        verdict = {"pass": "reached", "short": "below target at quick settings", "fail": "MISSED"}[_verdict(entry)[0]]
        print(f"    {ms['name']} = {_fmt(ms['value'])} (target {ms.get('op', '')} {ms['target']}) {verdict} "
              f"in {entry['seconds']} s", file=sys.stderr, flush=True)
        entries.append(entry)
    seconds = time.perf_counter() - started
    report = {"members": [{k: e[k] for k in ("name", "recipe", "milestone", "seconds", "metrics", "figures", "quick")}
                          | ({"error": e["error"]} if "error" in e else {}) for e in entries],
              "seconds": round(seconds, 2), "quick": quick}
    write_json(out / "report.json", report)
    write_html(out, entries, seconds)
    return report
