"""The quick recipes are a budget, not a timing: each declares what its quick settings reach (its quick
milestone, measured at seeds 0, 1 and 2) and what they cost (seconds on 2 idle cores); tests/test_tour.py adds
the declared costs up, side-by-side runs included, against the tour's 10 minutes."""

from zupu import registry


def tour_recipes():
    return [(m.name, r) for m in registry.MEMBERS if m.works for r in m.recipes().values() if r.in_tour]


def test_a_quick_milestone_comes_with_its_cost_and_is_a_real_metric_name():
    for member, r in tour_recipes():
        if r.quick_milestone is None:
            continue
        assert r.quick_seconds is not None and r.quick_seconds > 0, f"{member} {r.name}: quick_seconds"
        assert r.quick_milestone.metric, f"{member} {r.name}"
        assert r.milestone_for(quick=True) is r.quick_milestone and r.milestone_for(quick=False) is r.milestone

