"""The sweep's MLflow record: runs and metrics (`tracking`), a sweep read back (`store`), the data
as dataset inputs (`dataset_inputs`), adapters and promoted models as logged models
(`logged_models`), where `sweep ui` lands (`ui_view`) and the server it starts (`server`).

Imports `sweep.spec` and below; never the trial or the reports."""
