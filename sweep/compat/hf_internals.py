"""Internals of datasets, transformers and TRL that the shared reference log-probs use
(datasets 5.2.0, transformers 5.23.0, TRL 1.16.0; see `sweep.compat`)."""

from __future__ import annotations

from . import usable

SHARED_REFERENCE = "the shared reference log-probs (share_reference)"


def shared_reference_usable(log=None) -> bool:
    return usable(SHARED_REFERENCE, "trl", "datasets", "transformers", log=log)


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
