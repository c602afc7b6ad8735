"""Work a sweep does once, not once per trial: tokenised data with reference log-probs,
shared by its trials through a checksummed cache (the warm base model is warm_model.py).

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

from .compat.hf_internals import dataset_fingerprint, model_revision, trainer_taking_tokenised

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


def ref_cache_key(model, tokenizer, data, args, bnb, cuda: bool) -> str:
    """Hash of everything the tokenised data and the reference log-probs depend on; `data`:
    the splits as the trainer gets them (KTO's unpaired and shuffled, so their fingerprints
    carry the seed)."""
    import datasets
    import torch
    import transformers
    import trl

    parts = {
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


def attach_reference_logps(trainer, cache_dir: Path, log=print) -> dict[str, float]:
    """Make `trainer` (a `prepared_trainer`) read reference log-probs from its splits.

    Only train rows some trial reads get a value: this trial's rows come from its own
    sampler (`rows_reached`); rows nobody has read yet hold NaN. If the cache (which the
    trainer's splits may already be) lacks any of this trial's rows, they are computed in
    parts that trials starting together share (`_compute_parts`), then written into the cache
    under a file lock; no row is computed twice by trials that need the same rows. Returns
    timings: `time/reference_loaded_s` or `time/reference_computed_s` (this trial wrote
    the cache), and `time/reference_pass_s`, the part of the pass this trial computed."""
    import time

    from filelock import FileLock

    t0 = time.time()
    how, computing = "loaded", 0.0
    rows = rows_reached(trainer)
    columns = ref_columns(trainer)
    splits = {"train": trainer.train_dataset, "eval": trainer.eval_dataset}
    todo = {"train": _missing(splits["train"], columns[0], rows), "eval": _missing(splits["eval"], columns[0], None)}
    if todo["train"] or todo["eval"]:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        computed, computing = _compute_parts(trainer, splits, todo, cache_dir)
        with FileLock(str(cache_dir) + ".lock"):
            cached = load_reference(cache_dir, repair=True, log=log)
            if cached is not None:
                for name, split in splits.items():
                    if len(cached[name]) != len(split):
                        raise RuntimeError(
                            f"reference cache {cache_dir} has {len(cached[name])} {name} rows, expected {len(split)}"
                        )
                splits = dict(cached)
            new = {
                name: {i: computed[name][i] for i in _missing(splits[name], columns[0], todo[name])} for name in splits
            }
            if new["train"] or new["eval"]:  # (a trial that started with this one may have written them already)
                import datasets

                tmp = cache_dir.with_name(cache_dir.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                datasets.DatasetDict(
                    {name: _with_values(splits[name], columns, new[name]) for name in splits}
                ).save_to_disk(str(tmp))
                _write_manifest(tmp)
                # Trials reading the old version keep their open (memory-mapped) files.
                shutil.rmtree(cache_dir, ignore_errors=True)
                os.replace(tmp, cache_dir)  # a reader holding the lock sees all of it or nothing
                how = "computed"
                log(f"reference log-probs: {len(new['train'])} train, {len(new['eval'])} eval rows written")
            splits = dict(load_reference(cache_dir))  # memory-mapped from disk, as later trials get it
        trainer.train_dataset, trainer.eval_dataset = splits["train"], splits["eval"]
    trainer.precompute_ref_logps = True  # _compute_loss now reads the columns instead of a reference forward
    log(f"reference log-probs {how} in {time.time() - t0:.1f}s ({computing:.1f}s computing): {cache_dir}")
    return {f"time/reference_{how}_s": time.time() - t0, "time/reference_pass_s": computing}


def _compute_parts(trainer, splits: dict, todo: dict[str, list[int]], cache_dir: Path):
    """Reference values of the `todo` rows of each split, {split: {row: [value per column]}},
    and the seconds this trial spent computing parts of them.

    The rows are cut into parts of two eval batches, each computed by whichever trial takes
    its file lock first and kept as a small .npy under `<cache>/parts/`; a trial takes the parts
    nobody holds, then waits for the others' and reads them. Trials that start together
    (same rows to do: same seed and steps) so split the pass between them instead of all but
    one waiting for it; with 8 trials on 8 GPUs the pass is ~8x shorter."""
    import time

    import numpy as np
    from filelock import FileLock, Timeout

    folder = parts_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    size = 2 * trainer.args.per_device_eval_batch_size
    parts = [(name, rows[i : i + size]) for name, rows in todo.items() for i in range(0, len(rows), size)]
    values: dict[str, dict[int, list[float]]] = {name: {} for name in todo}
    waiting, computing = [], 0.0
    for blocking in (False, True):  # first the parts nobody holds, then the others'
        for name, rows in waiting if blocking else parts:
            lock_file, result = part_files(folder, name, rows)
            try:
                with FileLock(str(lock_file), timeout=-1 if blocking else 0):
                    if _part(result, len(rows)) is None:  # not written (its trial died?) or damaged
                        t0 = time.time()
                        tmp = result.with_suffix(f".{os.getpid()}.npy")
                        np.save(tmp, np.asarray(_ref_values(trainer, splits[name], rows), dtype=np.float64))
                        os.replace(tmp, result)
                        computing += time.time() - t0
            except Timeout:
                waiting.append((name, rows))
                continue
            for i, row in zip(rows, _part(result, len(rows)), strict=True):
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


def rows_reached(trainer) -> list[int] | None:
    """The train rows this trainer's run will read, from its own sampler (seeded as training
    seeds it); None when it reads every row (an epoch or more, or no `max_steps`)."""
    import itertools

    args = trainer.args
    if args.max_steps <= 0:
        return None
    loader = trainer.get_train_dataloader()
    batches = args.max_steps * args.gradient_accumulation_steps
    if loader.batch_sampler is None or batches >= len(loader):
        return None
    return sorted({i for batch in itertools.islice(loader.batch_sampler, batches) for i in batch})


def _missing(split, column: str, rows: list[int] | None) -> list[int]:
    """Which of `rows` (None: all) have no reference log-probs in `split`'s `column` yet."""
    rows = range(len(split)) if rows is None else rows
    if column not in split.column_names:
        return list(rows)
    values = list(split[column])
    return [i for i in rows if math.isnan(values[i])]


def parts_folder(cache_dir: Path) -> Path:
    return cache_dir.parent / "parts" / cache_dir.name


def part_files(folder: Path, split: str, rows: list[int]) -> tuple[Path, Path]:
    """(lock file, result file) of the part of a reference pass over `split`'s `rows`."""
    key = hashlib.sha256(json.dumps([split, rows]).encode()).hexdigest()[:16]
    return folder / f"{split}-{key}.lock", folder / f"{split}-{key}.npy"


def _ref_values(trainer, split, rows: list[int]) -> list[list[float]]:
    """The reference values of `split`'s `rows`, one list per row (a value per reference
    column), computed with TRL's own `compute_ref_log_probs` (the adapter disabled) over the
    same collated rows training uses."""
    import torch
    from torch.utils.data import DataLoader

    columns = ref_columns(trainer)
    loader = DataLoader(
        split.select(rows), batch_size=trainer.args.per_device_eval_batch_size, collate_fn=trainer.data_collator
    )
    new: dict[str, list[float]] = {c: [] for c in columns}
    trainer.model.eval()
    for batch in loader:
        batch = {k: v.to(trainer.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        # DPO: (chosen, rejected); KTO: (completion, KL completion or None)
        for c, out in zip(columns, trainer.compute_ref_log_probs(trainer.model, batch)):
            new[c] += out.float().cpu().tolist()
    trainer.model.train()
    return [list(row) for row in zip(*(new[c] for c in columns))]


def _with_values(split, columns: tuple[str, ...], new: dict[int, list[float]]):
    """`split` with the reference `columns` set at the rows of `new` (NaN where never computed)."""
    have = columns[0] in split.column_names
    values = {c: list(split[c]) if have else [math.nan] * len(split) for c in columns}
    for i, row in new.items():
        for c, v in zip(columns, row, strict=True):
            values[c][i] = v
    if have:
        split = split.remove_columns(list(columns))
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
                raise RuntimeError("a batch has rows without reference log-probs (rows_reached missed them)")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    Prepared.__name__ = f"Prepared{trainer_name}"
    return Prepared
