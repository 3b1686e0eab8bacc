"""``marquee experiment report`` over a table of counts written as the flow writes them."""

from __future__ import annotations

import json
from dataclasses import astuple

from infra.cli import main
from infra.experiment_report import build, render
from streams.outcome_table import read_totals, write_rows
from streams.outcomes import ALL, Counts


def row(exp: str, variant: str, mode: str, **counts: float) -> tuple:
    return (exp, variant, mode, *astuple(Counts(**counts)))


def write_example(path) -> None:
    """Two shards' rows of an A/B and an interleaving experiment; shard u01 written twice
    (a restart writes the same absolute counts again: nothing doubles)."""
    u00 = [row("ab-test", "a", "ab", rankings=500, impressions=5000, clicks=400, plays=300,
               completes=100, watch_s=90_000.0, watch_sq=9e7),
           row("ab-test", "b", "ab", rankings=500, impressions=5000, clicks=420, plays=400,
               completes=150, watch_s=120_000.0, watch_sq=1.2e8),
           row("il-test", "a", "interleave", rankings=2000, impressions=3000, plays=500,
               preferred=700),
           row("il-test", "b", "interleave", rankings=2000, impressions=3000, plays=560,
               preferred=1100),
           row("il-test", ALL, "interleave", rankings=2000, tied=40)]
    u01 = [row("il-test", "a", "interleave", rankings=40, impressions=120, plays=10,
               preferred=18),
           row("il-test", "b", "interleave", rankings=40, impressions=120, plays=12,
               preferred=22),
           row("il-test", ALL, "interleave", rankings=40, tied=2)]
    write_rows(path, [("u00", u00), ("u01", u01)])
    write_rows(path, [("u01", u01)])


def test_totals_sum_shards_and_the_verdicts_read_as_the_counts_say(tmp_path):
    path = tmp_path / "experiments.sqlite3"
    write_example(path)
    totals = read_totals(path)
    il = totals["il-test"]
    assert (il.variants["b"].preferred, il.variants["a"].preferred, il.overall.tied) == \
        (1122, 718, 42)
    assert il.overall.rankings == 2040 and il.mode == "interleave"
    report = build(il)
    # 1122 of 1840 decided requests: 61%, a sign test far below 0.001.
    assert report.verdict.startswith("b preferred in 61% of decided requests, p = ")
    assert "1,840 decided requests (42 ties, 158 without a play, 2,040 interleaved)" \
        in report.verdict
    assert report.preference["p"] < 1e-15

    ab = build(totals["ab-test"])
    assert ab.baseline == "a"
    d = ab.differences["b"]["play"]
    assert round(d.value, 4) == 0.02 and d.low > 0 and d.p < 0.001
    assert ab.verdict.startswith("b beats a on play rate: 8.0% vs 6.0% (+2.0 points, 95% CI ")
    click = build(totals["ab-test"], metric="click")
    assert click.verdict.startswith("no difference yet between b and a on click rate")
    text = render(ab)
    assert "b - a: click +0.4 points" in text and "verdict: b beats a" in text


def test_the_command_prints_one_report_per_experiment_and_says_when_there_is_none(
        tmp_path, capsys):
    assert main(["experiment", "report", "--data-dir", str(tmp_path)]) == 1
    assert "no experiment counts" in capsys.readouterr().err
    write_example(tmp_path / "experiments.sqlite3")
    assert main(["experiment", "report", "--data-dir", str(tmp_path),
                 "--experiment", "il-test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("experiment il-test (interleave)") and "ab-test" not in out
    assert main(["experiment", "report", "--data-dir", str(tmp_path), "--json"]) == 0
    got = {r["experiment"]: r for r in json.loads(capsys.readouterr().out)}
    assert got["ab-test"]["differences"]["b"]["play"]["p"] < 0.001
    assert main(["experiment", "report", "--data-dir", str(tmp_path), "--experiment", "x"]) == 1
    assert "experiments counted: ab-test, il-test" in capsys.readouterr().err


def aa_streams(path, streams: int, users: int = 40) -> None:
    """``streams`` A/A experiments through the flow's join into one table: users split in
    two arms that rank alike, each user with their own play propensity (a few play a lot)
    and number of requests, so a user's impressions are far from independent trials."""
    import random

    from streams.contract.events import Action
    from streams.contract.fast_events import Event
    from streams.outcomes import JoinConfig, LoggedItem, LoggedRanking, OutcomeShard

    t0, n = 1_767_225_600_000, 0
    for s in range(streams):
        rng = random.Random(s)
        shard = OutcomeShard(JoinConfig())
        for u in range(users):
            user, arm = f"u{u}", "ab"[rng.random() < 0.5]
            propensity = rng.betavariate(0.5, 4)
            for _ in range(rng.randint(1, 15)):
                n += 1
                rid, ts = f"{n:032x}", t0 + n
                items = [LoggedItem(f"i{j}", arm) for j in range(5)]
                shard.rankings([LoggedRanking(rid, ts, user, items, f"aa{s}", "ab", [arm])], ts)
                shard.events([Event(event_id=f"{rid}{j}", user_id=user, ts=ts + 1,
                                    action=Action("play" if rng.random() < propensity
                                                  else "impression"),
                                    device="tv", surface="home", item_id=f"i{j}",
                                    request_id=rid) for j in range(5)], ts + 1)
        write_rows(path, [(f"s{s}", shard.take_rows())])


def test_an_aa_test_decides_about_as_often_as_its_level_says(tmp_path):
    """Users as the unit keep the false decisions of an A/A test near the 5% level; the same
    counts with impressions as the unit (a table without per-user sums) decide far more
    often, which is why the report takes users as the unit."""
    from dataclasses import replace

    path = tmp_path / "experiments.sqlite3"
    aa_streams(path, 150)
    totals = read_totals(path)
    assert len(totals) == 150
    by_users = by_impressions = 0
    for t in totals.values():
        assert all(c.users > 0 for c in t.variants.values())
        by_users += build(t).differences["b"]["play"].p < 0.05
        flat = {v: replace(c, users=0) for v, c in t.variants.items()}
        by_impressions += build(replace(t, variants=flat)).differences["b"]["play"].p < 0.05
    assert by_users / 150 <= 0.10, by_users
    assert by_impressions > 2 * by_users, (by_impressions, by_users)
