"""`python -m stages <name> [args]`: run stage ``stages/<name>.py``, the command of every
stage in dvc.yaml. Under DVC the stage runs in a worker forked from a process that has
torch and MLflow imported already (see ``mnistlab.core.warm``); anywhere else, or if
that fails before the hand-off, it runs here, as ``python -m stages.<name>`` would.
"""

import sys

from mnistlab.core.warm import launch

if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
