"""Other libraries' private internals, used here and nowhere else, and only with the versions
they were written against.

`sweep` reaches past the public APIs of Ray, TRL, datasets and transformers in a few places,
each for speed or for a scheduler Ray Tune does not offer:

- `ray_internals`: `ray.init(_system_config=...)` to preload the stack into warm workers, Ray
  Tune's per-actor env vars, a local Ray's autoscaler monitor. Without them trials start in
  fresh workers and a local shutdown takes 1 s longer.
- `halving`: Ray Tune's HyperBand bracket (`_Bracket`, `_process_bracket`, ...). Without it
  `scheduler: halving` is refused as a spec error (asha and median remain).
- `hf_internals`: `Dataset._fingerprint`, `PretrainedConfig._commit_hash`,
  `DPOTrainer._prepare_dataset`, TRL's "ref" adapter. Without them every trial computes its
  own reference log-probs (`share_reference` off). The order in which the Trainer's seeded
  sampler draws train rows (transformers' and accelerate's samplers) and TRL's
  `_prepare_dataset` for more rows: without them a trial tokenises every train row, as TRL
  does, not only the rows it reads. Also TRL's experimental
  `peft_module_casting_to_bf16`, with which `evaluate` rebuilds a 4-bit CPO/ORPO trial's model
  as its trainer had it.
- `mlflow_internals`: the SQL store's bulk metric-history query and the tracking server's
  bulk-history route (its UI's). Without them the readers (`export --history`, `report`)
  ask for one run's history of one metric at a time: a 1,000-trial sweep's export takes
  minutes instead of seconds.

`WRITTEN_FOR` holds the versions each was written and tested against (the pinned stack);
where the installed version differs, each speed-up turns itself off with one warning line and
the sweep runs correctly without it, and `scheduler: halving` is refused: never an
`AttributeError` in the middle of a sweep. `tests/unit/compat/test_compat.py` fakes other versions.
"""

from __future__ import annotations

import importlib.metadata
import sys

WRITTEN_FOR = {
    "ray": "2.60.0",
    "trl": "1.16.0",
    "datasets": "5.2.0",
    "transformers": "5.23.0",
    "accelerate": "1.16.0",
    "mlflow": "3.17.2",
}
_WARNED: set[str] = set()


def installed(library: str) -> str | None:
    """The installed version of `library` (read from its metadata: nothing is imported)."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return None


def differing(*libraries: str) -> dict[str, str | None]:
    """{library: installed version} of those of `libraries` (default: all) not at WRITTEN_FOR."""
    names = libraries or tuple(WRITTEN_FOR)
    return {name: v for name in names if (v := installed(name)) != WRITTEN_FOR[name]}


def describe(found: dict[str, str | None]) -> str:
    """`ray 2.61.0 (written for 2.60.0)`, for messages."""
    return ", ".join(f"{name} {v or 'missing'} (written for {WRITTEN_FOR[name]})" for name, v in found.items())


def usable(feature: str, *libraries: str, log=None) -> bool:
    """Whether `feature`, which relies on internals of `libraries`, may run with the installed
    versions; where not, one warning line per feature per process says it is off."""
    found = differing(*libraries)
    if not found:
        return True
    if feature not in _WARNED:
        _WARNED.add(feature)
        line = f"warning: {feature} is off: it relies on internals of {describe(found)}"
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
    return False
