"""Work a sweep does once, not once per trial, and only as far as its trials read: tokenised
train rows with reference log-probs, shared by its trials through a checksummed cache (the
warm base model is trial/kept_model.py).

A trial reads `max_steps x batch x accumulation` train rows (`planned_rows.py`); `read_rows`
gives its trainer those rows tokenised, from this cache where another trial tokenised them.

Reference log-probs are the frozen base model's log-probs of each row: DPO's
`ref_chosen_logps`/`ref_rejected_logps` per pair, KTO's `ref_logps` per completion and
`ref_KL_logps` per mismatched (KL) completion. They do not depend on beta, loss type,
learning rate, steps or LoRA init, so every DPO-family trial of a sweep can share one pass,
and every KTO trial with the same data order another. TRL's own `precompute_ref_log_probs`
cache misses between trials (its key hashes the model with the freshly initialised adapter,
and the dataset fingerprint changes with every config field), so the first trials to need
them compute them with TRL's `compute_ref_log_probs` (those starting together share the
pass, part by part) and store the tokenised splits with the columns under
`<results_dir>/cache/ref-<key>/`; the others (of this sweep, a resumed one, or a later
sweep with the same key) load them. The key hashes exactly what the values
depend on: library versions, base weights, quantisation and dtype, tokenizer and chat
template, the dataset and its formatting, max_length, and DPO's truncation and `ld_alpha`
or KTO's seed (its rows are shuffled), batch size (each KL completion is another row's of
the same batch) and whether its loss estimates the KL term at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from ..compat.hf_internals import (
    dataset_fingerprint,
    model_revision,
    trainer_taking_tokenised,
)
from .planned_rows import ROW, Plan, concat_rows, rows_kept, rows_reached

DPO_REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
KTO_REF_COLUMNS = ("ref_logps", "ref_KL_logps")
# family -> (TRL trainer, a column only its tokenised splits have, the reference column it reads)
PREPARED = {
    "dpo": ("DPOTrainer", "chosen_ids", DPO_REF_COLUMNS[0]),
    "kto": ("KTOTrainer", "completion_ids", KTO_REF_COLUMNS[0]),
}


def ref_columns(trainer) -> tuple[str, ...]:
    """The reference columns `trainer` reads: DPO's two per pair, KTO's per completion (and
    per KL completion where its loss estimates the KL term)."""
    if hasattr(trainer, "calculate_KL"):  # a KTOTrainer
        return KTO_REF_COLUMNS if trainer.calculate_KL else KTO_REF_COLUMNS[:1]
    return DPO_REF_COLUMNS


# ---- reference log-probs, computed once -------------------------------------------------


CACHE_FORMAT = 2  # train rows held by their index (ROW), only those some trial read


def ref_cache_key(model, tokenizer, data, args, bnb, cuda: bool) -> str:
    """Hash of everything the tokenised data and the reference log-probs depend on; `data`:
    the splits as the trainer gets them (KTO's unpaired and shuffled, so their fingerprints
    carry the seed)."""
    import datasets
    import torch
    import transformers
    import trl

    parts = {
        "format": CACHE_FORMAT,
        "versions": [trl.__version__, transformers.__version__, torch.__version__, datasets.__version__],
        "model": model_identity(model),
        "quantization": bnb.to_dict() if bnb is not None else None,
        "device": "cuda" if cuda else "cpu",
        "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.chat_template, tokenizer.eos_token],
        "data": [dataset_fingerprint(data["train"]), dataset_fingerprint(data["eval"])],
    }
    if hasattr(args, "desirable_weight"):  # KTOConfig: each KL completion is another row's of its batch
        # (the loss type decides whether there is a KL term and a KL column at all)
        parts["args"] = [args.max_length, args.per_device_train_batch_size, args.loss_type]
    else:
        parts["args"] = [args.max_length, args.truncation_mode, args.ld_alpha]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(model) -> list:
    """Which base weights a model holds, in what dtype and quantization: its path (or hub id),
    the hub commit or the local files' signature. Shared caches (reference log-probs, the base
    model's judged answers) key on it."""
    weights = model_revision(model) or _files_signature(model.config.name_or_path)
    quantization = getattr(model.config, "quantization_config", None)  # a 4-bit base answers differently
    if quantization is not None and not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return [model.config.name_or_path, weights, str(model.dtype), quantization]


def _files_signature(path: str) -> list:
    """Names, sizes and mtimes of a local model directory's files (a hub id without a commit: itself)."""
    p = Path(path)
    if not p.is_dir():
        return [path]
    return sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in p.iterdir() if f.is_file())


MANIFEST = "done"  # written last into a reference cache: the sha256 of each of its files


def load_reference(cache_dir: Path, repair: bool = False, log=print):
    """The cached tokenised splits with reference columns, or None if not computed yet or
    damaged: a file truncated, altered or missing since it was written (checked against the
    manifest) is never trained on. `repair` (under the cache's lock): a damaged cache is
    removed with a warning, to be computed again."""
    import datasets

    if not (cache_dir / MANIFEST).exists():
        return None
    problem = _damage(cache_dir)
    if problem is None:
        try:
            return datasets.load_from_disk(str(cache_dir))
        except Exception as e:  # the manifest matched, yet Arrow cannot read it
            problem = f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if repair:
        log(f"warning: reference cache {cache_dir} is damaged ({problem}); computing it again")
        shutil.rmtree(cache_dir, ignore_errors=True)
    return None


def _write_manifest(folder: Path) -> None:
    sums = {str(f.relative_to(folder)): _sha256(f) for f in sorted(folder.rglob("*")) if f.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sums, indent=0))


def _damage(folder: Path) -> str | None:
    """What differs from the manifest (None: every file as written)."""
    try:
        sums = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest"
    if not isinstance(sums, dict) or not sums:
        return "no readable manifest"
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} differs from what was written"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the train rows a trial reads, tokenised once ----------------------------------------


def read_rows(trainer, split, plan: Plan | None, cache_dir: Path | None, cached, log=print) -> dict[str, float]:
    """Give `trainer` (built with `first_rows`) the train rows it reads, tokenised, in the order
    it reads them, and (with `cache_dir`, whose content `cached` the trial loaded) their and
    the eval split's reference log-probs.

    With a plan, its train split lists the planned rows in order, then stand-ins up to the
    split's length (epochs and the progress bar count as over the whole split), and its
    sampler is sequential: it reads exactly the planned rows, in the order its own seeded
    sampler would have drawn them. Rows the cache holds are not tokenised again; reference
    values missing for any row this trial reads are computed in parts that trials starting
    together share (`_compute_parts`) and added to the cache under a file lock. Returns
    timings: `time/reference_loaded_s` or `time/reference_computed_s` (this trial wrote the
    cache), and `time/reference_pass_s`, the part of the pass this trial computed."""
    import time

    t0 = time.time()
    columns = ref_columns(trainer) if cache_dir is not None else ()
    pool = concat_rows([cached["train"]] if cached is not None else [], trainer.train_dataset, columns)
    pool, kept = rows_kept(trainer, split, plan, pool, columns, log)
    if plan is not None and len(kept) < plan.needed:  # too few rows survive: all of them, in the trainer's own order
        trainer.args.train_sampling_strategy = plan.strategy
        plan, kept = None, sorted(kept)

    how, computing = "loaded", 0.0
    eval_split = trainer.eval_dataset
    if cache_dir is not None:
        index, values = {r: i for i, r in enumerate(pool[ROW])}, list(pool[columns[0]])
        train_todo = [index[r] for r in kept if math.isnan(values[index[r]])]
        eval_todo = _missing(eval_split, columns[0])
        if train_todo or eval_todo:
            todo = {
                "train": (pool, train_todo, list(pool.select(train_todo)[ROW])),
                "eval": (eval_split, eval_todo, eval_todo),
            }
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
            computed, computing = _compute_parts(trainer, todo, cache_dir)
            _write_reference(cache_dir, pool.select(train_todo), eval_split, columns, computed, log)
            cached = load_reference(cache_dir)  # memory-mapped from disk, as later trials get it
            how = "computed"
        pool, eval_split = cached["train"], cached["eval"]
        trainer.precompute_ref_logps = True  # _compute_loss now reads the columns instead of a reference forward
    index = {r: i for i, r in enumerate(pool[ROW])}
    positions = [index[r] for r in kept]
    if plan is not None:  # stand-ins the sequential sampler never reaches
        positions += positions[:1] * (len(split) - len(positions))
    trainer.train_dataset, trainer.eval_dataset = pool.select(positions).remove_columns([ROW]), eval_split
    reached = rows_reached(trainer)
    if plan is not None and reached and max(reached) >= len(kept):
        raise RuntimeError(f"the trainer reads train row {max(reached)}, beyond the {len(kept)} planned")
    if cache_dir is None:
        return {}
    log(f"reference log-probs {how} in {time.time() - t0:.1f}s ({computing:.1f}s computing): {cache_dir}")
    return {f"time/reference_{how}_s": time.time() - t0, "time/reference_pass_s": computing}


def _write_reference(cache_dir: Path, new_train, eval_split, columns, computed: dict, log) -> None:
    """Add `new_train` (tokenised train rows) and the eval split, with the `computed` reference
    values, to the cache at `cache_dir`, under its lock; what another trial added meanwhile is
    kept, and a reader holding the lock sees all of the cache or nothing."""
    import datasets
    from filelock import FileLock

    with FileLock(str(cache_dir) + ".lock"):
        cached = load_reference(cache_dir, repair=True, log=log)
        held = set(cached["train"][ROW]) if cached is not None else set()
        rows = [i for i, r in enumerate(new_train[ROW]) if r not in held]
        if cached is not None and not _missing(cached["eval"], columns[0]):
            if not rows:
                return  # another trial wrote all of it meanwhile
            eval_split = cached["eval"]
        else:
            eval_split = _with_values(eval_split, columns, computed["eval"], by_position=True)
        # (no empty part: datasets cannot add a column to an empty selection of a concatenation)
        parts = [cached["train"]] if cached is not None else []
        parts += [_with_values(new_train.select(rows), columns, computed["train"])] if rows else []
        train = datasets.concatenate_datasets(parts)
        tmp = cache_dir.with_name(cache_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        datasets.DatasetDict({"train": train, "eval": eval_split}).save_to_disk(str(tmp))
        _write_manifest(tmp)
        # Trials reading the old version keep their open (memory-mapped) files.
        shutil.rmtree(cache_dir, ignore_errors=True)
        os.replace(tmp, cache_dir)
        log(f"reference log-probs: {len(rows)} train, {len(computed['eval'])} eval rows written")


def _compute_parts(trainer, todo: dict, cache_dir: Path):
    """Reference values of the rows to do, {split: {row id: [value per column]}}, and the
    seconds this trial spent computing parts of them; `todo`: {split: (dataset, positions of
    its rows to do, their ids)}.

    The rows are cut into parts of two eval batches, each computed by whichever trial takes
    its file lock first and kept as a small .npy under `<cache>/parts/`, named by its rows' ids;
    a trial takes the parts nobody holds, then waits for the others' and reads them. Trials
    that start together (same rows to do: same seed and steps) so split the pass between them
    instead of all but one waiting for it: 8 trials on 8 GPUs split it 8 ways."""
    import time

    import numpy as np
    from filelock import FileLock, Timeout

    folder = parts_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    size = 2 * trainer.args.per_device_eval_batch_size
    parts = [
        (name, positions[i : i + size], ids[i : i + size])
        for name, (_, positions, ids) in todo.items()
        for i in range(0, len(positions), size)
    ]
    values: dict[str, dict[int, list[float]]] = {name: {} for name in todo}
    waiting, computing = [], 0.0
    for blocking in (False, True):  # first the parts nobody holds, then the others'
        for name, positions, ids in waiting if blocking else parts:
            lock_file, result = part_files(folder, name, ids)
            try:
                with FileLock(str(lock_file), timeout=-1 if blocking else 0):
                    if _part(result, len(ids)) is None:  # not written (its trial died?) or damaged
                        t0 = time.time()
                        tmp = result.with_suffix(f".{os.getpid()}.npy")
                        rows = _ref_values(trainer, todo[name][0], positions)
                        np.save(tmp, np.asarray(rows, dtype=np.float64))
                        os.replace(tmp, result)
                        computing += time.time() - t0
            except Timeout:
                waiting.append((name, positions, ids))
                continue
            for i, row in zip(ids, _part(result, len(ids)), strict=True):
                values[name][i] = row
    return values, computing


def _part(path: Path, n_rows: int) -> list | None:
    """A part's reference values, or None where the file is missing, truncated or not finite."""
    import numpy as np

    try:
        values = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    return values.tolist() if len(values) == n_rows and np.isfinite(values).all() else None


def _missing(split, column: str) -> list[int]:
    """Which rows of `split` have no reference log-probs in `column` yet."""
    if column not in split.column_names:
        return list(range(len(split)))
    return [i for i, v in enumerate(split[column]) if math.isnan(v)]


def parts_folder(cache_dir: Path) -> Path:
    return cache_dir.parent / "parts" / cache_dir.name


def part_files(folder: Path, split: str, rows: list[int]) -> tuple[Path, Path]:
    """(lock file, result file) of the part of a reference pass over `split`'s `rows` (ids)."""
    key = hashlib.sha256(json.dumps([split, rows]).encode()).hexdigest()[:16]
    return folder / f"{split}-{key}.lock", folder / f"{split}-{key}.npy"


def _ref_values(trainer, split, rows: list[int]) -> list[list[float]]:
    """The reference values of `split`'s `rows` (positions), one list per row (a value per
    reference column), computed with TRL's own `compute_ref_log_probs` (the adapter disabled)
    over the same collated rows training uses."""
    import torch
    from torch.utils.data import DataLoader

    columns = ref_columns(trainer)
    chosen = split.select(rows)
    chosen = chosen.remove_columns([c for c in (ROW, *columns) if c in chosen.column_names])
    loader = DataLoader(chosen, batch_size=trainer.args.per_device_eval_batch_size, collate_fn=trainer.data_collator)
    new: dict[str, list[float]] = {c: [] for c in columns}
    trainer.model.eval()
    for batch in loader:
        batch = {k: v.to(trainer.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        # DPO: (chosen, rejected); KTO: (completion, KL completion or None)
        for c, out in zip(columns, trainer.compute_ref_log_probs(trainer.model, batch)):
            new[c] += out.float().cpu().tolist()
    trainer.model.train()
    return [list(row) for row in zip(*(new[c] for c in columns))]


def _with_values(split, columns: tuple[str, ...], new: dict[int, list[float]], by_position: bool = False):
    """`split` with the reference `columns` set from `new` ({row id (ROW), or position: values});
    where `new` has none, the value the split had (NaN if none)."""
    keys = range(len(split)) if by_position else list(split[ROW])
    have = columns[0] in split.column_names
    values = {c: list(split[c]) if have else [math.nan] * len(split) for c in columns}
    for i, key in enumerate(keys):
        for c, v in zip(columns, new.get(key, ()), strict=False):
            values[c][i] = v
    split = split.remove_columns([c for c in columns if c in split.column_names]).flatten_indices()
    for c in columns:
        split = split.add_column(c, values[c])
    return split


def prepared_trainer(family: str):
    """TRL's trainer for `family` (one of PREPARED), taking splits already tokenised (as the
    cache holds them) as they are, and refusing a batch with a row whose reference log-probs
    were never computed."""
    import torch
    import trl

    trainer_name, tokenised, column = PREPARED[family]
    base = trainer_taking_tokenised(getattr(trl, trainer_name), tokenised)

    class Prepared(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.precompute_ref_logps and torch.isnan(inputs[column]).any():
                raise RuntimeError("a batch has rows without reference log-probs (rows beyond those planned)")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    Prepared.__name__ = f"Prepared{trainer_name}"
    return Prepared
