"""How a sweep runs, as `python -m sweep run` and `sweep.run` take it: one value from the front
to the Ray Tune driver, instead of each option passed on layer by layer."""

from __future__ import annotations

import dataclasses

from ..runtime.cluster import address_of


@dataclasses.dataclass(frozen=True)
class RunOptions:
    address: str | None = dataclasses.field(
        default=None, metadata={"help": "an existing Ray cluster to join (else $RAY_ADDRESS; neither: a local Ray)"}
    )
    fresh: bool = dataclasses.field(
        default=False, metadata={"help": "start a new parent run where the spec changed under the same name"}
    )
    retry_failed: bool = dataclasses.field(
        default=False, metadata={"help": "run a resumed sweep's failed trials again"}
    )
    verbose: bool = dataclasses.field(
        default=False, metadata={"help": "let Ray's and the trials' own output through to the console"}
    )
    progress_interval: float = dataclasses.field(
        default=30.0, metadata={"help": "seconds between progress lines where the console is not a terminal"}
    )
    joins: str | None = dataclasses.field(
        init=False, metadata={"help": "the cluster joined (resolved once); None: local"}
    )

    def __post_init__(self):
        object.__setattr__(self, "joins", address_of(self.address))
