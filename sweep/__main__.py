import atexit
import os
import sys

if sys.argv[1:2] == ["run"]:  # until the sweep starts (orchestrate.run_sweep resumes it): startup.py
    from .runtime import startup

    startup.pause()
if sys.argv[1:2] in (["run"], ["plan"]):  # this process loads no model (trials run in Ray workers)
    from .trial.model import skip_bitsandbytes

    skip_bitsandbytes()

from .cli import main  # noqa: E402

code = main()
# Exit without tearing the interpreter down: freeing torch/transformers/Ray module by module
# takes seconds and does nothing for us. Exit handlers still run (Ray's shutdown,
# temporary files, logging), and every file and MLflow run is closed by now.
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
