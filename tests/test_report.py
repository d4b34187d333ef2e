"""The tour's report.html and its figures: built from a synthetic report.json and run directories (real
members, made-up numbers), read as text and in headless Chromium at a phone's and a wide screen's size."""

from __future__ import annotations

import itertools
import json
import re
import warnings

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, browser_or_skip, check_screenshot
from reference import unavailable

from zupu import registry
from zupu.report import duration, layout, number, tree_svg, write_html
from zupu.train.metrics import display_name
from zupu.train.plots import cjk_font, plot_history, save

POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"


def entry(name, recipe, value, target, passed, quick, **extra):
    ms = {"name": "test_acc", "value": value, "target": target, "op": ">=", "passed": passed, "paper": ""}
    return {"name": name, "recipe": recipe, "milestone": ms, "seconds": 12.345678, "quick": quick,
            "settings": {"epochs": 3, "lr": 0.05}, "metrics": {"test_acc": value, "train_loss": 0.123456789},
            "figures": [], "texts": [], "run": "fresh", **extra}


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory):
    """A report as `zupu tour --quick` writes it: four members, one missed and one broken run."""
    out = tmp_path_factory.mktemp("tour")
    entries = [entry("perceptron", "digits-14x14", 0.8912345, 0.85, True, {"epochs": 3}),
               entry("lenet", "lenet5-mnist", 0.949, 0.97, False, {"epochs": 3}),
               entry("gpt", "tang-poems", None, 0.8, False, {"max_steps": 10}, error="ValueError: boom"),
               # a long milestone name and paper: its table once pushed a phone's page sideways
               entry("rbm", "digits", 0.0028, -0.01, True, {"epochs": 3})]
    history = [{"step": s, "train_loss": 1 / (s + 1), "test_acc": 0.5 + s / 40} for s in range(0, 20, 2)]
    for e in entries:
        run = out / e["name"] / e["recipe"]
        run.mkdir(parents=True)
        assert plot_history(history, run / "curves.png", f"{e['name']} · {e['recipe']}", ("test_acc", 0.9))
        e["figures"] = [str((run / "curves.png").relative_to(out))]
    (out / "gpt" / "tang-poems" / "samples.txt").write_text(POEM, encoding="utf-8")
    entries[2]["texts"] = ["gpt/tang-poems/samples.txt"]
    report = {"members": entries, "seconds": 754.2, "quick": True, "cores": 2, "only": [], "skip": ["vit"]}
    (out / "report.json").write_text(json.dumps(report))
    write_html(out, report)
    return out, report


def test_the_page_says_what_ran_in_words_a_reader_uses(tour_dir):
    out, report = tour_dir
    page = (out / "report.html").read_text()
    assert '<meta name=viewport content="width=device-width,initial-scale=1">' in page
    assert "2 of 4 milestones" in page and "12 min 34 s" in page and "zupu tour --quick --skip vit" in page
    for e in report["members"]:
        assert f'id="m-{e["name"]}"' in page and f'id="r-{e["name"]}-{e["recipe"]}"' in page
        assert f'href="#m-{e["name"]}" data-member="{e["name"]}"' in page  # its node in the tree links to it
    assert "test accuracy" in page and "0.891" in page and "0.8912345" not in page and "0.123" in page
    assert page.count("data:image/png;base64,") == 4 and POEM.splitlines()[0] in page
    assert "ValueError: boom" in page and "zupu train lenet --recipe lenet5-mnist --quick" in page
    assert page.count('class="badge missed"') == 2 and page.count('class="badge passed"') == 2
    assert "<li class=changed><code>epochs = 3</code>" in page  # the settings run, quick changes marked
    assert "zupu/recipes/lenet.py" in page and "commit " in page and "usable cores" in page
    for planned in ("clip", "sam"):  # members that do not work yet are drawn, unlinked
        assert f'href="#m-{planned}"' not in page and f">{planned}</text>" in page


def test_a_quick_run_judged_by_its_own_milestone_shows_the_full_recipes_beside_it(tmp_path, monkeypatch):
    from zupu.recipe import Milestone

    lenet5 = registry.get("lenet").recipe("lenet5-mnist")
    e = entry("lenet", "lenet5-mnist", 0.95, 0.94, True, {"epochs": 1})
    report = {"members": [e], "seconds": 20.0, "quick": True, "cores": 2}
    monkeypatch.setattr(type(lenet5), "quick_milestone", None)
    write_html(tmp_path, report)
    assert "the full recipe" not in (tmp_path / "report.html").read_text()  # judged by the full one already
    monkeypatch.setattr(type(lenet5), "quick_milestone", Milestone("test_acc", 0.94))
    write_html(tmp_path, report)
    page = (tmp_path / "report.html").read_text()
    full = page.split("<th>the full recipe</th>")[1].split("</tr>")[0]
    assert f"test accuracy >= {number(lenet5.milestone.target)}" in full and "not this run" in full


def test_numbers_and_names_are_rounded_and_spelled_out():
    assert [number(v) for v in (0.94891234, 1.8861, 12345.6, 3, None, True)] == [
        "0.949", "1.89", "12,346", "3", "—", "yes"]
    assert [duration(s) for s in (0.4, 89.4, 754.2)] == ["0 s", "89 s", "12 min 34 s"]
    assert display_name("val_loss") == "validation loss"
    assert display_name("acc_minus_sklearn_rbm") == "accuracy minus scikit-learn RBM"


def test_the_tree_draws_years_in_order_and_no_arrow_through_a_box():
    members = registry.members()
    cell = layout(members)
    assert len(set(cell.values())) == len(members)  # one member a place
    widest = max(sum(m.year == y for m in members) for y in {m.year for m in members})
    assert max(c for c, _ in cell.values()) + 1 <= max(3, widest)  # no wider than it must be: phones
    rows = {m.name: cell[m.name][1] for m in members}
    assert all((rows[a.name] < rows[b.name]) == (a.year < b.year) for a in members for b in members if a.year != b.year)
    svg = tree_svg({})
    rect = r'<rect x="([\d.]+)" y="([\d.]+)" width="(\d+)" height="(\d+)"'
    boxes = [tuple(map(float, b)) for b in re.findall(rect, svg)]
    paths = [[tuple(map(float, p.split(","))) for p in re.findall(r"[\d.]+,[\d.]+", d)]
             for d in re.findall(r'<path class=edge d="([^"]+)"', svg)]
    assert len(boxes) == len(members) and len(paths) == sum(len(m.parents) for m in members)

    def inside(pt, box):
        x, y, w, h = box
        return x + 1 < pt[0] < x + w - 1 and y + 1 < pt[1] < y + h - 1

    for pts in paths:  # sampled every pixel: only the arrow's own two boxes may touch it, at its ends
        for (xa, ya), (xb, yb) in itertools.pairwise(pts):
            n = int(max(abs(xb - xa), abs(yb - ya))) + 1
            for t in range(n + 1):
                pt = (xa + (xb - xa) * t / n, ya + (yb - ya) * t / n)
                assert not any(inside(pt, b) for b in boxes), (pts, pt)


def test_curves_have_no_one_point_plots(tmp_path):
    assert not plot_history([{"step": 0, "and_acc": 1.0}], tmp_path / "c.png", "mp-neuron")
    assert not (tmp_path / "c.png").exists()


def test_chinese_text_in_figures_renders_real_glyphs(tmp_path):
    """matplotlib warns "Glyph ... missing from font(s)" for each character it draws as a box."""
    import matplotlib.pyplot as plt

    if cjk_font() is None:
        unavailable("no font with Chinese glyphs is installed (Debian: apt-get install fonts-wqy-microhei)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.set_yticks([0, 1], ["明月", "故乡"])
        ax.set_title("注意力 (attention) a_ij")
        save(fig, tmp_path / "cjk.png")
        plot_history([{"step": s, "困惑度_loss": 1.0 / (s + 1)} for s in range(3)], tmp_path / "c.png", "唐诗")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]


@pytest.mark.parametrize("width,height,label", [(390, 844, "phone"), (1440, 900, "wide")])
def test_report_in_headless_chromium(tour_dir, tmp_path, width, height, label):
    sync_playwright = browser_or_skip()
    out, report = tour_dir
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(15_000)
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            shot = tmp_path / f"report-{label}.png"
            check_screenshot(page.screenshot(), shot, width, height, (0, 0, width, min(height, 400)))
            for e in report["members"]:
                assert page.locator(f'[id="r-{e["name"]}-{e["recipe"]}"]').count() == 1
            widths = page.eval_on_selector_all("img:not(dialog img)", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == len(report["members"]) and all(w > 0 for w in widths), widths
            assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing spills sideways
            boxes = [b for b in page.eval_on_selector_all(".tree .node text", "els => els.map(e => {"
                     "const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })")]
            assert len(boxes) == len(registry.members())
            for i, a in enumerate(boxes):  # no two members' labels overlap
                assert all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1] for b in boxes[i + 1:])
            page.locator('a.node[data-member="lenet"]').click()
            page.wait_for_function("Math.abs(document.getElementById('m-lenet').getBoundingClientRect().top) < 20")
            assert page.evaluate("location.hash") == "#m-lenet"
            page.locator("#m-lenet figure img").first.click()
            assert page.locator("dialog#zoom").evaluate("d => d.open")
            assert page.locator("dialog#zoom img").evaluate("i => i.naturalWidth") > 0
        finally:
            browser.close()
    assert not errors, errors
