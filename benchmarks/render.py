"""Every measured figure the README and docs/benchmarks.md quote, rendered from the benchmark JSON:

    python benchmarks/render.py           # rewrite each rendered region from its JSON
    python benchmarks/render.py --check   # exit 1 naming each region that differs (tests/unit/test_docs.py)

A region is the text between `<!-- NAME: begin -->` and `<!-- NAME: end -->`; RENDERERS says
which function renders it, in which document, from which JSON. Each rendering carries the date, the
machine and the repeats of its measurement: CPU figures hold for that machine, not every CPU.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_scale  # noqa: E402  (a sibling script: its table is its own)


def _range(values) -> str:
    values = list(values)
    return f"{min(values):.2f}–{max(values):.2f}×"


def _agreement(d: dict) -> str:
    worst = max(d["detail"]["max_abs_diff"].values())
    agree = "agree" if d["metrics_agree"] else "DISAGREE"
    return (
        "identical" if worst == 0 and d["metrics_agree"] else f"{agree} (max |diff| {worst:.1e} in the median repeat)"
    )


def speedup_readme(d: dict) -> str:
    """The README's speed table: the median repeat's walls and speed-up, every repeat's range."""
    m = d["detail"]
    speedups = [e["speedup"] for e in d["each"]]
    return "\n".join(
        [
            f"| {d['machine']} CPU, {d['date']}, embedded default, {d['points']}-point grid "
            "(`python benchmarks/sweep_speedup.py`) | naive (one `trl` process per point) | `sweep run` |",
            "| --- | --- | --- |",
            f"| wall time, the median of {d['repeats']} alternated repeats | {m['naive_wall_s']:.0f} s "
            f"| {m['sweep_wall_s']:.0f} s: {m['speedup']:.2f}× ({_range(speedups)} over the repeats) |",
            f"| final loss, rewards/margins, rewards/accuracies | | {_agreement(d)} on all {d['points']} trials |",
        ]
    )


SCHEDULER_ROWS = {
    "asha": "`asha` (rungs at 15-step evals)",
    "asha_fine": "`asha`, rungs every 5 steps",
    "asha_steps_as_resource": "`asha`, steps as the resource",
    "halving": "`halving`",
    "halving_steps_as_resource": "`halving`, steps as the resource",
}


def _point(p: dict) -> str:
    return f"{p['loss_type']}/{p['beta']:g}/{p['learning_rate']:g}" + (f"/{p['max_steps']}" if "max_steps" in p else "")


def speedup_docs(d: dict) -> str:
    """docs/benchmarks.md's latest run: each repeat, the median repeat's phases, KTO, the schedulers."""
    each, m = d["each"], d["detail"]
    rows = {
        "naive wall": [f"{e['naive_wall_s']:.1f} s" for e in each],
        "`sweep run` wall": [f"{e['sweep_wall_s']:.1f} s" for e in each],
        "speed-up": [f"{e['speedup']:.2f}×" for e in each],
        "efficiency (lower bound / sweep)": [f"{e['efficiency']:.2f}" for e in each],
        "start-up to the first training step": [f"{e['start_up_s']:.1f} s" for e in each],
    }
    phases, naive = list(m["sweep_phases_s"].values()), m["naive_phases_s_summed"]
    lines = [
        f"`python benchmarks/sweep_speedup.py --repeats {d['repeats']}` ({d['date']}, {d['machine']}; "
        f"{d['points']} points, {d['concurrency']} at a time):",
        "",
        "| | " + " | ".join(f"repeat {i + 1}" for i in range(len(each))) + " |",
        "| --- |" + " --- |" * len(each),
        *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()),
        "",
        f"Speed-up median {statistics.median(e['speedup'] for e in each):.2f}× ({_range(e['speedup'] for e in each)}). "
        f"Final loss, rewards/margins and rewards/accuracies: {_agreement(d)} on all {d['points']} trials. "
        f"The median repeat's phases: start-up {phases[0]:.1f} s, one reference pass {phases[1]:.1f} s, "
        f"per-trial set-up {phases[2]:.1f} s summed, policy-only training {phases[3]:.1f} s summed, "
        f"orchestration {phases[4]:.1f} s; the naive runs spent {naive['start-up']:.1f} s summed on start-up "
        f"and {naive['training (with inline reference)']:.1f} s on training with the reference inline.",
    ]
    if "kto" in d:
        k = d["kto"]
        lines += [
            "",
            f"KTO, reference shared vs inline: {k['step_s_median']['shared']:.4f} vs "
            f"{k['step_s_median']['inline']:.4f} s/step ({k['step_speedup']:.2f}×), metrics within "
            f"{max(k['max_abs_diff'].values()):.1e}.",
        ]
    measured = [name for name in SCHEDULER_ROWS if name in d]
    if measured:
        best = d["full_grid_best"]
        lines += [
            "",
            f"Early stopping on the same grid, ranked by `eval_rewards/accuracies` (the grid's best: "
            f"{_point(best)}, {d['full_grid_best_metric']:.3f}), run once each:",
            "",
            "| scheduler | share of the grid's steps | found | regret |",
            "| --- | --- | --- | --- |",
            *(
                f"| {SCHEDULER_ROWS[n]} | {d[n]['steps_fraction']:.1%} | {_point(d[n]['best'])} | {d[n]['regret']:g} |"
                for n in measured
            ),
        ]
    return "\n".join(lines)


def _trial(t: dict) -> str:
    return f"{t['loss_type']} beta {t['beta']:g}"


def default_sweep_output(d: dict) -> str:
    """The README's excerpt of what the default sweep prints at its end: the ranked table's first
    columns, its first and last rows, what mattered, the base model, proxy vs judge."""
    printed = d["printed_report"]
    header_at = next(i for i, line in enumerate(printed) if line.lstrip().startswith("status "))
    header = printed[header_at]
    cut = header.index("eval_rewards/accuracies") + len("eval_rewards/accuracies")
    rows = [line[:cut].rstrip() for line in printed[header_at + 1 :] if line.strip()]
    rows = rows[: len(d["report"]["trials"])]
    mattered = next(i for i, line in enumerate(printed) if line.startswith("what mattered:"))
    tail = [line for line in printed[mattered + 1 :] if line.strip()]
    return "\n".join(
        [
            "```",
            printed[0],
            "",
            header[:cut] + "  …",
            *rows[:3],
            "…",
            *rows[-2:],
            "…",
            printed[mattered].split(";")[0] + "; …",
            *tail,
            "```",
        ]
    )


def default_sweep_figures(d: dict) -> str:
    """The README's reading of that output, with the date and machine it was measured on."""
    r = d["report"]
    trials = [t for t in r["trials"] if t["status"] == "FINISHED"]
    best, worst = trials[0], trials[-1]  # ranked by the judged score
    base = r["base_model"]
    proxy = next(t for t in trials if t["trial"] == r["proxy_vs_judge"]["proxy_best"])
    rank = trials.index(proxy) + 1
    return (
        f"On {d['machine']} ({d['date']}; another CPU may differ in the last digits) the sweep took "
        f"{d['wall_s']:.0f} s. The best trial ({_trial(best)}) scores {best['eval_judge/score']:.3g} against the "
        f"base model's {base['base_judge/score']:.3g} and wins {best['eval_judge/win_rate']:.0%} of the prompts "
        f"(ties half) with answers of {best['eval_judge/length']:.3g} tokens to the base's "
        f"{base['base_judge/length']:.3g}; the worst ({_trial(worst)}) is "
        f"{best['eval_judge/score'] - worst['eval_judge/score']:.3g} below it. The proxy, held-out reward "
        f"accuracy, would have picked {_trial(proxy)}: {rank} of {len(trials)} by what it says."
    )


def readers_docs(d: dict) -> str:
    """docs/benchmarks.md's table of the readers on a large sweep, beside the code they replaced."""
    vs = f" | before (`{d['vs']}`) | speed-up" if d.get("vs") else ""
    rows = [
        f"{d['machine']} CPU, {d['date']}, a {d['trials']:,}-trial record, the median of {d['repeats']} "
        "alternated runs (`python benchmarks/readers_at_scale.py`):",
        "",
        f"| command | now | target{vs} |",
        "| --- | --- | ---" + (" | --- | ---" if vs else "") + " |",
    ]
    for name, c in d["commands"].items():
        target = d["targets_s"].get(name)
        cells = [f"`{c['command']}`", f"{c['median_s']:.1f} s", f"≤ {target:g} s" if target else "—"]
        if vs:
            cells += [f"{c['vs_median_s']:.1f} s", f"{c['speedup']:.1f}×"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def early_stopping_judged_docs(d: dict) -> str:
    """docs/benchmarks.md's table of early stopping on the default sweep, ranked by the judge."""
    best = d["grid_best"]
    rows = [
        f"{d['machine']} CPU, {d['date']}, the default sweep ranked by `{d['metric']}`, run once each "
        f"(`python benchmarks/early_stopping_judged.py`); the full grid's best: {', '.join(best['trials'])} "
        f"({best['score']:.3g}):",
        "",
        "| scheduler | share of the grid's steps | stopped early | found | regret |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in d["schedulers"].items():
        label = "the full grid" if name == "none" else f"`{name}`"
        rows.append(
            f"| {label} | {s['share_of_grid_steps']:.1%} | {s['stopped_early']} | {s['found']} | {s['regret']:.3g} |"
        )
    return "\n".join(rows)


def _cell(value, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def yardsticks_docs(d: dict) -> str:
    """docs/benchmarks.md's section on every yardstick on the embedded default."""
    flaws = {"rambling": "right but hedging", "wrong": "wrong"}
    outcomes = ["right preferred", "tie", "other preferred", "unparseable"]
    rows = [
        f"{d['machine']} CPU, {d['date']} (`python benchmarks/yardsticks.py`): in an empty cache `builtin:tiny` "
        f"built in {d['build_s']['tiny']:.0f} s and `builtin:judge` in {d['build_s']['judge']:.0f} s (once per "
        f"machine); then `{d['command']}` ran in {d['sweep_wall_s']:.0f} s.",
        "",
        "What `builtin:judge` sees, asked about held-out pairs (the right answer against the rejected one, both orders):",
        "",
        "| the other answer | " + " | ".join(outcomes) + " |",
        "| --- |" + " --- |" * len(outcomes),
    ]
    for flaw, counts in d["judge_agreement"].items():
        rows.append(f"| {flaws.get(flaw, flaw)} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    rows += [
        "",
        "| trial | status | `eval_judge/score` | LLM judge win rate | length-controlled | unparseable | length | "
        "`prefs_choice` acc | worst vs base |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in d["trials"]:
        rows.append(
            f"| {t['loss_type']} β={t['beta']:g} | {t['status']} | {_cell(t['eval_judge/score'])} | "
            f"{_cell(t['eval_judge/llm_judge'])} | {_cell(t['eval_judge/llm_judge_lc'])} | "
            f"{_cell(t['eval_judge/llm_judge_unparsed'], '.0f')} | {_cell(t['eval_judge/length'])} | "
            f"{_cell(t['harness/prefs_choice/acc'])} | {_cell(t['harness/worst_vs_base'], '+.3g')} |"
        )
    base = d["base_model"] or {}
    front = d["pareto_front"] or {"objectives": {}, "trials": []}
    named = ", ".join(f"{t['loss_type']} β={t['beta']:g}" for t in front["trials"])
    rows += [
        "",
        f"The base model: `eval_judge/score` {_cell(base.get('base_judge/score'))}, `prefs_choice` acc "
        f"{_cell(base.get('base_harness/prefs_choice/acc'))}. The Pareto front over "
        + ", ".join(f"`{k}` ({'higher' if v == 'max' else 'lower'} better)" for k, v in front["objectives"].items())
        + f": {named}.",
    ]
    return "\n".join(rows)


# A region `<!-- NAME: begin -->` ... `<!-- NAME: end -->` -> {document: its rendering}; its
# JSON is benchmarks/NAME up to a `#` (one JSON may render several regions of a document).
RENDERERS: dict[str, dict[str, Callable[[dict], str]]] = {
    "sweep_speedup.json": {"README.md": speedup_readme, "docs/benchmarks.md": speedup_docs},
    "data_scale.json": {"docs/benchmarks.md": data_scale.render},
    "default_sweep.json#output": {"README.md": default_sweep_output},
    "default_sweep.json#figures": {"README.md": default_sweep_figures},
    "readers_at_scale.json": {"docs/benchmarks.md": readers_docs},
    "early_stopping_judged.json": {"docs/benchmarks.md": early_stopping_judged_docs},
    "yardsticks.json": {"docs/benchmarks.md": yardsticks_docs},
}


def rendered(document: str) -> str:
    """`document` (a path under the repository) with each of its regions rendered from its JSON."""
    text = (REPO / document).read_text()
    for name, by_doc in RENDERERS.items():
        if document not in by_doc:
            continue
        begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"{document} must hold exactly one {begin} ... {end} region")
        body = by_doc[document](json.loads((REPO / "benchmarks" / name.split("#")[0]).read_text()))
        text = re.sub(
            re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.DOTALL
        )
    return text


def documents() -> list[str]:
    return sorted({doc for by_doc in RENDERERS.values() for doc in by_doc})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a document differs")
    args = parser.parse_args()
    stale = [doc for doc in documents() if rendered(doc) != (REPO / doc).read_text()]
    if args.check:
        for doc in stale:
            print(f"{doc}: a figure differs from its benchmark JSON; run python benchmarks/render.py", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for doc in stale:
        (REPO / doc).write_text(rendered(doc))
        print(f"rendered {doc}")


if __name__ == "__main__":
    main()
