"""Secrets known by where they come from: credential fields, URI passwords and `${env:...}` /
`${file:...}` references are masked in records; every other value reaches trials and records
exactly as written (a name merely containing "token" is not a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep import secrets
from sweep.record import tracking
from sweep.spec.load import parse_spec
from sweep.trial.configs import build_configs
from tests.conftest import small_spec

SETTINGS = {
    "include_num_input_tokens_seen": "non_padding",  # what docs/benchmarks.md recommends
    "pad_token": "<|endoftext|>",
    "logging_first_step": True,
}


def test_settings_named_like_secrets_reach_trials_and_records_as_written(tmp_path):
    spec = parse_spec(
        small_spec(
            "s",
            train=SETTINGS,
            lora={"trainable_token_indices": [1, 2]},
            judge={"prompts": 4, "scorers": ["builtin:verifiable"], "max_new_tokens": 17},
        )
    )
    given = secrets.sealed_spec(spec, {})  # what Ray Tune pickles for the trials
    assert {k: given.train[k] for k in SETTINGS} == SETTINGS and given.lora == spec.lora
    _, args, lora, _ = build_configs(given, {"beta": 0.1}, tmp_path, cuda=False)
    assert args.include_num_input_tokens_seen == "non_padding" and lora.trainable_token_indices == [1, 2]
    params = tracking.flat_params({**spec.train, "judge.max_new_tokens": spec.judge.max_new_tokens})
    assert params["include_num_input_tokens_seen"] == "non_padding" and params["judge.max_new_tokens"] == "17"


def test_credentials_and_uri_passwords_are_masked_and_references_resolved_where_used(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_HUB", "hf_fromTheEnvironment123")
    (tmp_path / "token.txt").write_text("hf_fromAFile456\n")
    raw = {
        "hub_token": "${env:SWEEP_TEST_HUB}",
        "model_init_kwargs": {"token": "hf_writtenOut789", "extra": {"api_key": "sk-literal", "revision": "main"}},
        "hub_model_id": f"${{file:{tmp_path / 'token.txt'}}}",
        "uri": "postgresql://sweep:pa55word@db:5432/mlflow?password=also",
    }
    masked = secrets.mask(raw)
    assert masked["hub_token"] == "${env:SWEEP_TEST_HUB}"  # a reference is no secret: it is recorded
    assert masked["model_init_kwargs"] == {"token": "<masked>", "extra": {"api_key": "<masked>", "revision": "main"}}
    assert masked["uri"] == "postgresql://sweep:<masked>@db:5432/mlflow?password=<masked>"
    assert secrets.literal_credentials({"train": raw}) == [
        "train.model_init_kwargs.token",
        "train.model_init_kwargs.extra.api_key",
    ]
    resolved = secrets.resolve(raw)
    assert resolved["hub_token"] == "hf_fromTheEnvironment123" and resolved["hub_model_id"] == "hf_fromAFile456"
    # once resolved in this process, the values are masked wherever a record would show them
    assert secrets.mask_text(f"hub_token={resolved['hub_token']}") == "hub_token=<masked>"
    with pytest.raises(KeyError, match="SWEEP_TEST_UNSET is not set where the trial runs"):
        secrets.resolve({"token": "${env:SWEEP_TEST_UNSET}"})
    assert tracking.StoreUnreachable.of("http://u:secretpw@host:5000", "x").args[0].count("secretpw") == 0


def test_a_trial_receives_a_referenced_token_and_records_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_HUB", "hf_fromTheEnvironment123")
    spec = parse_spec(small_spec("s", train={"model_init_kwargs": {"token": "${env:SWEEP_TEST_HUB}"}}))
    given = secrets.sealed_spec(spec, {})
    assert given.train["model_init_kwargs"] == {"token": "${env:SWEEP_TEST_HUB}"}
    _, args, _, _ = build_configs(given, {"beta": 0.1}, Path(tmp_path), cuda=False)
    assert args.model_init_kwargs["token"] == "hf_fromTheEnvironment123"
    assert "hf_fromTheEnvironment123" not in str(secrets.mask(args.to_dict()))


def test_a_trial_receives_secrets_written_out_exactly_and_nothing_pickled_holds_them(tmp_path):
    """A literal token and a tracking URI's password reach the trial as written, yet the spec
    and URI Ray Tune pickles hold only `${sweep:...}` references: the values travel apart (the
    object store) and are masked in whatever the receiving process writes."""
    import pickle

    token, password = "hf_literalTOKENnotStored42", "pw-NOTstored-77"
    spec = parse_spec(
        small_spec(
            "s",
            train={"model_init_kwargs": {"token": token, "revision": "main"}},
            tracking={"uri": f"postgresql://sweep:{password}@db:5432/mlflow"},
        )
    )
    sealed: dict[str, str] = {}
    given = secrets.sealed_spec(spec, sealed)
    uri = secrets.seal(f"http://sweep:{password}@head:5000", sealed, "uri")
    pickled = pickle.dumps((given, uri))
    assert token.encode() not in pickled and password.encode() not in pickled
    assert given.train["model_init_kwargs"] == {"token": "${sweep:train.model_init_kwargs.token}", "revision": "main"}
    assert uri == "${sweep:uri}" and given.tracking.uri == "${sweep:tracking.uri}"
    with pytest.raises(KeyError, match="handed this process no such value"):
        build_configs(given, {"beta": 0.1}, tmp_path, cuda=False)  # a trial not given them says so

    secrets.provide(sealed)  # what a trial does with what the driver put in the object store
    _, args, _, _ = build_configs(given, {"beta": 0.1}, tmp_path, cuda=False)
    assert args.model_init_kwargs["token"] == token and secrets.resolve(uri) == f"http://sweep:{password}@head:5000"
    log = tmp_path / "trial.log"
    log.write_text(f"loading with token={token}\nAPI request to http://sweep:{password}@head:5000/api failed\n")
    secrets.mask_file(log)
    assert token not in log.read_text() and password not in log.read_text() and "<masked>" in log.read_text()
    error = secrets.without_secret_text(ConnectionError(f"API request to http://sweep:{password}@head:5000 failed"))
    assert isinstance(error, secrets.MaskedError) and password not in str(error)
