"""Loss families: which TRL trainer and config train a given `loss_type`.

One spec can sweep `loss_type: [sigmoid, ipo, kto, simpo]`, as Hugging Face's study did:
the name picks the family, the family picks the trainer.

    family  trainer (TRL 1.16)                    loss_type names in a spec
    dpo     trl.DPOTrainer                        the 15 DPO losses, or a list + loss_weights
    kto     trl.KTOTrainer                        kto, apo_zero_unpaired (pairs are unpaired and shuffled)
    cpo     trl.experimental.cpo.CPOTrainer       simpo (SimPO: cpo_alpha 0), cpo (sigmoid + BC term)
    orpo    trl.experimental.orpo.ORPOTrainer     orpo

Fields of any of the four configs can be set in `train` or swept; each trial gets the ones
its family's config has (`simpo_gamma` reaches only SimPO/CPO trials).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .catalogue import catalogue, import_path

# DPOTrainer loss names in TRL 1.16 (its `_compute_loss`; the config accepts any string and
# fails only at the first step, so we check up front). tests/unit/spec/test_load.py checks this list
# against the installed TRL.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@dataclass(frozen=True)
class Family:
    name: str
    config: str  # "module:Class"
    trainer: str
    loss_types: tuple[str, ...]
    paired: bool = True  # False: trains on unpaired (prompt, completion, label) rows
    uses_reference: bool = True

    def config_class(self):
        return import_path(self.config)

    def trainer_class(self):
        return import_path(self.trainer)


FAMILIES = {
    "dpo": Family("dpo", "trl:DPOConfig", "trl:DPOTrainer", DPO_LOSS_TYPES),
    "kto": Family("kto", "trl:KTOConfig", "trl:KTOTrainer", ("kto", "apo_zero_unpaired"), paired=False),
    "cpo": Family(
        "cpo",
        "trl.experimental.cpo:CPOConfig",
        "trl.experimental.cpo:CPOTrainer",
        ("simpo", "cpo"),
        uses_reference=False,
    ),
    "orpo": Family(
        "orpo", "trl.experimental.orpo:ORPOConfig", "trl.experimental.orpo:ORPOTrainer", ("orpo",), uses_reference=False
    ),
}
LOSS_TYPES = tuple(lt for f in FAMILIES.values() for lt in f.loss_types)


def family_of(loss_type: str | list[str] | None) -> Family:
    """The family training `loss_type` (a list is a combined DPO loss). Unknown names -> KeyError."""
    if loss_type is None:
        return FAMILIES["dpo"]
    if isinstance(loss_type, list):
        if len(loss_type) == 1:
            return family_of(loss_type[0])
        unknown = [lt for lt in loss_type if lt not in DPO_LOSS_TYPES]
        if unknown:
            raise KeyError(unknown[0])
        return FAMILIES["dpo"]
    for family in FAMILIES.values():
        if loss_type in family.loss_types:
            return family
    raise KeyError(loss_type)


def config_kwargs(family: Family, train: dict[str, Any]) -> dict[str, Any]:
    """The `train` values this family's config takes, with `loss_type` translated to its own name."""
    fields = family_fields(family.name)
    kwargs = {k: v for k, v in train.items() if k in fields}
    loss = train.get("loss_type")
    loss = loss[0] if isinstance(loss, list) and len(loss) == 1 and family.name != "dpo" else loss
    if family.name == "cpo":
        # SimPO is CPO's `simpo` loss without the behaviour-cloning term (the SimPO paper's setting).
        kwargs["loss_type"] = "simpo" if loss == "simpo" else "sigmoid"
        if loss == "simpo":
            kwargs.setdefault("cpo_alpha", 0.0)
    elif family.name == "orpo":
        kwargs.pop("loss_type", None)
    elif family.name == "kto":
        kwargs["loss_type"] = loss
    return kwargs


def fields_catalogue() -> dict[str, Any]:
    """What the four configs, LoraConfig and BitsAndBytesConfig accept (catalogue.py)."""
    return catalogue(tuple((name, f.config) for name, f in FAMILIES.items()))


def family_fields(name: str) -> dict[str, Any]:
    """{field: options} of one family's config."""
    return fields_catalogue()["families"][name]


@functools.cache
def train_fields() -> dict[str, Any]:
    """Every field settable in `train`: the union of the four configs (DPOConfig's types first)."""
    fields: dict[str, Any] = {}
    for name in FAMILIES:
        for f, opts in family_fields(name).items():
            fields.setdefault(f, opts)
    return fields


def families_with(field_name: str) -> list[Family]:
    return [f for f in FAMILIES.values() if field_name in family_fields(f.name)]
