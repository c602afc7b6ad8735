"""One trial: `run.run_trial` around the family's TRL trainer (its configs: `configs`), the model
loaded and kept between trials (`model`, `kept_model`), what it reports at each step (`callbacks`,
`metric_sender`), its MLflow run (`mlflow_run`), held-out evaluation (`evaluation`) and judged
generations (`judge`, `scorers`); a finished trial loaded back, verified or promoted (`finished`).

Kept empty: a worker imports `sweep.trial.model` before it may import torch."""
