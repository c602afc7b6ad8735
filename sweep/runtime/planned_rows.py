"""The train rows a trial reads, and only those: `plan_rows` names them in the order its Trainer's
seeded sampler would draw them from the whole split, and the trial tokenises those alone
(`first_rows`, then `shared_cache.read_rows`): a 5-step smoke test of a 60k-pair dataset costs
5 steps, and trains exactly as over the whole split."""

from __future__ import annotations

import dataclasses
import math

from ..compat.hf_internals import (
    sampler_order,
    tokenise_train_rows,
)

ROW = "sweep_row"  # a tokenised train row's index in the formatted split: plans and caches name rows by it


@dataclasses.dataclass(frozen=True)
class Plan:
    """The train rows a trial reads: the first `needed` rows of `order` that tokenising keeps
    (TRL drops a pair whose prompt alone fills max_length), read in that order."""

    order: list[int]
    needed: int
    strategy: str  # the sampling strategy the trainer had: a plan reads its rows sequentially


def plan_rows(n: int, args) -> Plan | None:
    """Which of a train split's `n` rows a trial with `args` reads, in the order its Trainer's
    seeded sampler would draw them; None where it reads every row (an epoch or more, no
    `max_steps`, several processes, TRL's own reference pass, another sampling strategy)."""
    if (
        args.max_steps <= 0
        or args.world_size > 1
        or getattr(args, "precompute_ref_log_probs", False)
        or args.train_sampling_strategy not in ("random", "sequential")
    ):
        return None
    needed = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
    if needed >= n:
        return None
    return Plan(sampler_order(n, args), needed, args.train_sampling_strategy)


def with_rows(split, rows):
    """`split`'s `rows`, each with its index (ROW): what a trainer tokenises at construction."""
    rows = list(rows)
    return split.select(rows).add_column(ROW, rows)


def first_rows(split, plan: Plan | None, cached):
    """The train split a trainer is built with: the rows its plan reads first (all without a
    plan) that the reference cache (`cached`, loaded) does not hold yet, untokenised; or, where
    it holds them all, one of its tokenised rows (a trainer must be given some)."""
    held = set(cached["train"][ROW]) if cached is not None else set()
    wanted = plan.order[: plan.needed] if plan is not None else range(len(split))
    todo = [r for r in wanted if r not in held]
    return with_rows(split, todo) if todo or cached is None else cached["train"].select([0])


def rows_kept(trainer, split, plan: Plan | None, pool, columns: tuple[str, ...], log):
    """(`pool` topped up, the rows the trial reads in order): the planned rows (all without a
    plan) that tokenising kept; rows TRL dropped are replaced by the next planned ones,
    tokenised now, and counted in a warning."""
    order = plan.order if plan is not None else range(len(split))
    needed = plan.needed if plan is not None else len(split)
    taken = min(needed, len(order))
    while True:
        index = {r: i for i, r in enumerate(pool[ROW])}
        kept = [r for r in order[:taken] if r in index]
        if len(kept) >= needed or taken >= len(order):
            break
        more = [r for r in order[taken : taken + 2 * (needed - len(kept))] if r not in index]
        taken = min(len(order), taken + 2 * (needed - len(kept)))
        if more:
            pool = concat_rows([pool], tokenise_train_rows(trainer, with_rows(split, more)), columns)
    if taken > len(kept):
        log(
            f"warning: {taken - len(kept)} of the first {taken} train rows this trial reads have a prompt of "
            f"max_length={trainer.args.max_length} tokens or more and were skipped"
        )
    return pool, kept[:needed]


def concat_rows(parts: list, more, columns: tuple[str, ...]):
    """`parts` and `more` as one split, `more` given NaN reference `columns` where it lacks them."""
    import datasets

    if columns and columns[0] not in more.column_names:
        more = more.flatten_indices()  # (a filtered or selected split) columns are added to the rows it has
        for c in columns:
            more = more.add_column(c, [math.nan] * len(more))
    return datasets.concatenate_datasets([*parts, more]) if parts else more


def rows_reached(trainer) -> list[int] | None:
    """The train rows (positions in its train split) this trainer's run will read, from its own
    sampler (seeded as training seeds it); None when it reads every row (an epoch or more, or
    no `max_steps`)."""
    import itertools

    args = trainer.args
    if args.max_steps <= 0:
        return None
    loader = trainer.get_train_dataloader()
    batches = args.max_steps * args.gradient_accumulation_steps
    if loader.batch_sampler is None or batches >= len(loader):
        return None
    return sorted({i for batch in itertools.islice(loader.batch_sampler, batches) for i in batch})
