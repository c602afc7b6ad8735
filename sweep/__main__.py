import atexit
import os
import sys

from .cli import main

code = main()
# Exit without tearing the interpreter down: freeing torch/transformers/Ray module by module
# takes ~2.5 s on 2 cores and does nothing for us. Exit handlers still run (Ray's shutdown,
# temporary files, logging), and every file and MLflow run is closed by now.
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
