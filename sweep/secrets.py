"""Secrets, known by where they come from, never by a name that merely contains a word.

A secret is a credential field's value (a key named exactly `token`, `hub_token`, `api_key`,
`password`, ...: not `pad_token` or `max_new_tokens`), or the password inside a URI
(`postgresql://user:PASSWORD@db`, `?password=`). Records — params, the attached spec,
`trial_config.json`, console lines — mask them. A value may instead be a reference,
`${env:NAME}` or `${file:PATH}`, resolved only where it is used (`resolve`): the reference is
what is recorded and pickled, and the trial receives the value. Every other value reaches the
trial and the record exactly as written.

A secret written out (a literal credential, a URI with its password) still reaches the trial
exactly as written, but never through anything Ray Tune pickles to disk: `seal` swaps it for
a `${sweep:WHERE}` reference and keeps the value apart, which the driver hands the trials
through Ray's object store (in memory) and `provide`s to the processes that resolve it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

CREDENTIAL_FIELDS = frozenset(
    {
        "token",
        "hub_token",
        "use_auth_token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "private_key",
    }
)
MASK = "<masked>"
REFERENCE = re.compile(r"^\$\{(env|file|sweep):(.+)\}$")
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|token)=)[^&\s]+", re.IGNORECASE)


def is_credential(key: Any) -> bool:
    return str(key).lower() in CREDENTIAL_FIELDS


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and REFERENCE.match(value) is not None


def _written_out(key: Any, value: Any) -> bool:
    """Whether `key: value` is a credential given literally (not by reference)."""
    return is_credential(key) and isinstance(value, str) and bool(value) and not is_reference(value)


_RESOLVED: set[str] = set()  # values this process resolved from references: masked wherever they appear
_PROVIDED: dict[str, str] = {}  # sealed values handed to this process: what ${sweep:WHERE} names


def mask_text(text: str) -> str:
    """`text` with any URI's password (user-info or query parameter), and any value this
    process resolved from a reference, masked."""
    text = _QUERY_PASSWORD.sub(rf"\g<head>{MASK}", _URI_PASSWORD.sub(rf"\g<head>{MASK}", text))
    for value in _RESOLVED:
        text = text.replace(value, MASK)
    return text


def mask(value: Any) -> Any:
    """A copy of `value` for a record: literal credential fields masked at any depth, URI
    passwords masked in every string; references and everything else as written."""
    if isinstance(value, dict):
        return {k: MASK if _written_out(k, v) else mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    if isinstance(value, str):
        return mask_text(value)
    return value


def literal_credentials(value: Any, where: str = "") -> list[str]:
    """The fields of `value` holding a credential written out rather than referenced."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        path = f"{where}.{k}" if where else str(k)
        if _written_out(k, v):
            found.append(path)
        else:
            found += literal_credentials(v, path)
    return found


def resolve(value: Any) -> Any:
    """`value` with every `${env:NAME}` / `${file:PATH}` replaced by what it names, where it is
    used; a reference to nothing is a KeyError/OSError naming it (the trial fails with it)."""
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    match = REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    kind, name = match.groups()
    if kind == "sweep":
        if name not in _PROVIDED:
            raise KeyError(f"${{sweep:{name}}}: the sweep's driver handed this process no such value")
        return _PROVIDED[name]
    if kind == "env":
        if name not in os.environ:
            raise KeyError(f"${{env:{name}}}: the environment variable {name} is not set where the trial runs")
        found = os.environ[name]
    else:
        found = Path(name).expanduser().read_text(encoding="utf-8").strip()
    if len(found) >= 4:  # (shorter values would mask ordinary text)
        _RESOLVED.add(found)
    return found


def seal(value: Any, sealed: dict[str, str], where: str) -> Any:
    """A copy of `value` fit to be pickled: each credential written out, and each string holding
    a URI's password, replaced by `${sweep:WHERE}`; the values go into `sealed` (see `provide`)."""
    if isinstance(value, str) and not is_reference(value) and mask_text(value) != value:
        sealed[where] = value
        return f"${{sweep:{where}}}"
    if isinstance(value, dict):
        return {
            k: _sealed(where, k, v, sealed) if _written_out(k, v) else seal(v, sealed, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [seal(v, sealed, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _sealed(where: str, key: Any, value: str, sealed: dict[str, str]) -> str:
    sealed[f"{where}.{key}"] = value
    return f"${{sweep:{where}.{key}}}"


def sealed_spec(spec: Any, sealed: dict[str, str]) -> Any:
    """The spec as trials are given it (Ray Tune pickles that into `results/<sweep>/ray/`): its
    config sections and tracking URI sealed, its `--set` overrides (recorded by key in the
    parent run) left out."""
    import dataclasses

    return dataclasses.replace(
        spec,
        train=seal(spec.train, sealed, "train"),
        lora=seal(spec.lora, sealed, "lora"),
        quantization=seal(spec.quantization, sealed, "quantization"),
        tracking=dataclasses.replace(spec.tracking, uri=seal(spec.tracking.uri, sealed, "tracking.uri")),
        overrides=(),
    )


def provide(sealed: dict[str, str]) -> None:
    """Make sealed values resolvable in this process (the driver, and each trial once it has
    them from the object store); like resolved references, they are masked in what it writes."""
    _PROVIDED.update(sealed)
    _RESOLVED.update(v for v in sealed.values() if len(v) >= 4 and mask_text(v) == v)  # a URI: its password


def mask_file(path: Path) -> None:
    """Rewrite a log with `mask_text` applied, where it shows a secret (a library's error
    message may quote a URI with its password, or a value this process resolved)."""
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return
    masked = mask_text(text)
    if masked != text:
        tmp = path.with_name(path.name + ".masking")
        tmp.write_bytes(masked.encode("utf-8", "surrogateescape"))
        os.replace(tmp, path)


class MaskedError(RuntimeError):
    """A trial's error whose text held a secret, raised in its place with the text masked
    (Ray Tune writes a trial's error into its folder)."""


def without_secret_text(e: BaseException) -> BaseException:
    """`e`, or a MaskedError saying the same where its text (its chain included) shows a secret."""
    import traceback

    text = "".join(traceback.format_exception(e))
    if mask_text(text) == text:
        return e
    return MaskedError(mask_text(f"{type(e).__name__}: {e}"))
