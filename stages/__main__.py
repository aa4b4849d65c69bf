"""`python -m stages <name> [args]`: run stage ``stages/<name>.py``, the command of every
stage in dvc.yaml. The dispatch is harness (``mnistlab.harness.warm.launch``), never a
stage's dependency: under DVC a torch stage runs in a worker forked from a process that
has torch and MLflow imported already; a stage that says ``WARM = False``
(``validate_params``, ``download``: they import no torch), a stage run by hand, or one
whose hand-off fails runs here, in this process, as ``python -m stages.<name>`` would.
"""

import sys

from mnistlab.harness.warm import launch

if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
