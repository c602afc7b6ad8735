"""Internals of datasets, transformers, accelerate and TRL that the shared reference log-probs
and the planned train rows use (datasets 5.2.0, transformers 5.23.0, accelerate 1.16.0,
TRL 1.16.0; see `sweep.compat`)."""

from __future__ import annotations

from . import usable

SHARED_REFERENCE = "the shared reference log-probs (share_reference)"


def shared_reference_usable(log=None) -> bool:
    return usable(SHARED_REFERENCE, "trl", "datasets", "transformers", log=log)


PLANNED_ROWS = "tokenising only the train rows a trial reads"


def planned_rows_usable(log=None) -> bool:
    return usable(PLANNED_ROWS, "trl", "datasets", "transformers", "accelerate", log=log)


def dataset_fingerprint(dataset) -> str:
    """What a tokenised split was built from: its source files and every transform applied
    (datasets' own cache key)."""
    return dataset._fingerprint


def model_revision(model) -> str | None:
    """The hub commit a model was loaded from (None for a local directory or another version)."""
    return getattr(model.config, "_commit_hash", None)


def trainer_taking_tokenised(base, tokenised_column: str):
    """`base` (a TRL trainer class) that takes splits already tokenised, as the reference cache
    holds them, as they are instead of tokenising them again."""

    class TakesTokenised(base):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if tokenised_column in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return TakesTokenised


def sampler_order(n: int, args) -> list[int]:
    """The order in which a Trainer with `args` draws the rows of an `n`-row train split in its
    first epoch, without building one: transformers' `RandomSampler` becomes accelerate's
    `SeedableRandomSampler`, seeded with `data_seed` or, unset, the global seed `Trainer`
    sets from `seed`, which draws one `randperm` per epoch; `sequential` reads rows in order."""
    import torch

    if args.train_sampling_strategy == "sequential":
        return list(range(n))
    generator = torch.Generator()
    generator.manual_seed(args.data_seed if args.data_seed is not None else args.seed)
    return torch.randperm(n, generator=generator).tolist()


def tokenise_train_rows(trainer, rows):
    """`rows` (formatted, untokenised) tokenised as `trainer` tokenised its train split at
    construction (TRL's DPO and KTO `_prepare_dataset`: rows whose prompt fills max_length
    are dropped; CPO and ORPO truncate, never drop, and do not need this)."""
    if not hasattr(trainer, "_prepare_dataset"):
        raise RuntimeError(f"{type(trainer).__name__} cannot tokenise more train rows after construction")
    return trainer._prepare_dataset(rows, trainer.processing_class, trainer.args, "train")


def drop_trl_ref_adapter(model) -> None:
    """Given a PeftModel, TRL 1.16's DPOTrainer adds a "ref" adapter copying the current one and
    uses it as the reference (right for re-training an adapter, wrong for evaluating one: the
    reference is the base model). It would also become the reference of a KTO trainer sharing
    the model. Removed, TRL disables the adapter for the reference, as during training."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")


def peft_casting_to_bf16(model) -> None:
    """What TRL 1.16's CPO and ORPO trainers do to a 4-bit model under bf16 after wrapping it
    (`trl.experimental.utils.peft_module_casting_to_bf16`: norms to fp32, embeddings and output
    layer to bf16), for rebuilding such a trial's model as it was trained."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # pinned TRL: its experimental notice, once
    from trl.experimental.utils import peft_module_casting_to_bf16

    peft_module_casting_to_bf16(model)
