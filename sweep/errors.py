"""The one error bad input raises: `SpecError`, phrased for a user, and the did-you-mean
message of an unknown name."""

from __future__ import annotations

import difflib
import typing
from typing import Any


class SpecError(ValueError):
    """A problem with a spec, phrased for a user: `<field>: <what is wrong>; <what is allowed>`."""

    def __init__(self, field_path: str, message: str):
        self.field, self.message = field_path, message
        super().__init__(f"{field_path}: {message}")


def unknown(kind: str, name: Any, allowed: typing.Sequence[str], hint: str | None) -> str:
    close = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    if hint:
        msg += f"; expected {hint}"
    elif len(allowed) <= 20:
        msg += f"; valid: {', '.join(map(str, allowed))}"
    return msg
