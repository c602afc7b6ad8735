"""Benchmark regression: lm-evaluation-harness tasks on a trial's policy at its end (the adapter
on, the model in memory, no merge to disk) and once per sweep on the base model (the adapter
off; cached beside the reference log-probs), through `lm_eval.simple_evaluate`.

A trial logs, at its last step:

    harness/<task>/<metric>           the task's score (lm-eval's metric; `<metric>/<filter>`
                                      where the filter is not `none`)
    harness/<task>/<metric>/vs_base   its difference from the base model's
    harness/worst_vs_base             the lowest of those differences
    harness/regressed                 1 where that fell more than `harness.margin` below 0

and the base model's scores go on the parent run as `base_harness/<task>/<metric>`. lm-eval is
the `harness` extra; without it a spec with `harness.tasks` is refused (spec/checks.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path

from ..builtin import harness_task_folder
from ..errors import SpecError, unknown
from ..files import write_atomic
from ..runtime.shared_cache import model_identity

PREFIX, BASE_PREFIX = "harness/", "base_harness/"
WORST, REGRESSED = PREFIX + "worst_vs_base", PREFIX + "regressed"


def resolved(task) -> tuple[str, str | None]:
    """(the task's name for lm-eval, the folder it is defined in or None)."""
    if task.task.startswith("builtin:"):
        return task.task.removeprefix("builtin:"), str(harness_task_folder(task.task.removeprefix("builtin:")))
    return task.task, str(Path(task.include).expanduser().resolve()) if task.include else None


def task_manager(name: str, folder: str | None):
    """lm-eval's task index that has `name`, or None: a task folder's own tasks first (indexing
    every task lm-eval ships takes seconds), lm-eval's with them where the folder lacks it."""
    from lm_eval.tasks import TaskManager

    if folder:
        local = TaskManager(verbosity="ERROR", include_path=folder, include_defaults=False)
        if name in local.all_tasks:
            return local
    manager = TaskManager(verbosity="ERROR", include_path=folder)
    return manager if name in manager.all_tasks else None


def check(harness) -> None:
    """Before Ray starts: each task is one lm-eval knows (in its `include` folder, if any); what
    the spec alone can say (the extra installed, the folders there) spec.checks has checked."""
    from lm_eval.tasks import TaskManager

    for i, task in enumerate(harness.tasks):
        name, folder = resolved(task)
        if folder and name in TaskManager(verbosity="ERROR", include_path=folder, include_defaults=False).all_tasks:
            continue
        known = TaskManager(verbosity="ERROR", include_path=folder).all_tasks
        if name not in known:
            where = f" in {task.include}" if task.include else " (a local task needs `include:` its folder)"
            raise SpecError(
                f"harness.tasks[{i}].task",
                unknown("lm-eval task", name, sorted(known), hint=f"a task lm-eval knows{where}"),
            )


def scores(model, tokenizer, harness) -> dict[str, float]:
    """Each task's metrics on `model` as it is now: {"<task>/<metric>": value}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=harness.batch_size)
    out: dict[str, float] = {}
    for task in harness.tasks:
        name, folder = resolved(task)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[name],
            task_manager=task_manager(name, folder),
            limit=task.limit,
            apply_chat_template=harness.chat_template,
            log_samples=False,
            verbosity="ERROR",
        )["results"]
        for task_name, metrics in results.items():
            for key, value in metrics.items():
                metric, _, filtered = key.partition(",")
                if (
                    "_stderr" in metric
                    or metric == "sample_len"
                    or isinstance(value, bool)
                    or not isinstance(value, (int, float))
                ):
                    continue
                out[f"{task_name}/{metric}" + (f"/{filtered}" if filtered not in ("", "none") else "")] = float(value)
    return out


def run(model, tokenizer, harness, cache_dir: Path | None, on_base) -> dict[str, float]:
    """The trial's metrics: its scores, each one's difference from the base model's (scored once
    per sweep: the first trial to get here, under a lock; `on_base(scores)` records them once)."""
    was_training = model.training
    model.eval()
    try:
        base = _base_scores(model, tokenizer, harness, cache_dir, on_base)
        mine = scores(model, tokenizer, harness)
    finally:
        model.train(was_training)
    metrics = {PREFIX + k: v for k, v in mine.items()}
    diffs = {f"{PREFIX}{k}/vs_base": v - base[k] for k, v in mine.items() if k in base}
    metrics.update(diffs)
    if diffs:
        metrics[WORST] = min(diffs.values())
        metrics[REGRESSED] = float(metrics[WORST] < -harness.margin)
    return metrics


def _base_scores(model, tokenizer, harness, cache_dir: Path | None, on_base) -> dict[str, float]:
    def score_base() -> dict[str, float]:
        with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
            return scores(model, tokenizer, harness)

    if cache_dir is None:
        base = score_base()
        on_base(base)
        return base
    import lm_eval
    from filelock import FileLock

    key = [model_identity(model), str(model.device), dataclasses.asdict(harness), lm_eval.__version__]
    path = cache_dir / f"harness-{hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        try:
            base = json.loads(path.read_text())
        except (OSError, ValueError):  # not there yet, or damaged: scored again
            base = score_base()
            write_atomic(path, json.dumps(base))
        on_base(base)
    return base
