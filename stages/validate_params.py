"""Stage `validate_params`: fail `dvc repro` on any invalid key in params.yaml.

Every stage depends on this stage's output, and DVC runs a stage's upstream first,
so a bad params.yaml stops the pipeline here, before DVC deletes any other stage's
outputs. It also checks what only a stage would otherwise notice: a CUDA device that
is not there, and each model entry (its architecture is built with its keyword arguments
and must return 10 logits for one 28x28 image). The output is the same bytes whenever
params are valid, so a valid edit reruns only the stages that read the edited keys.
"""

from __future__ import annotations

import logging

from mnistlab.core.cli import parse_args, resolve_device
from mnistlab.core.config import load_params
from mnistlab.core.files import write_json
from mnistlab.core.models import check_models
from mnistlab.harness.runtime import stage_main

log = logging.getLogger("mnistlab.validate_params")
# It needs no MLflow, and torch only to build the models: a cold start beats waiting for a
# warm server, so under DVC it runs in its own process (see mnistlab.harness.warm).
WARM = False


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, out="marker file written when params are valid")
    params = load_params()
    if params.device == "cuda":
        resolve_device(params.device)  # fails in one line when no GPU is present
    check_models(params.models)
    write_json(args.out, {"params.yaml": "valid"})
    log.info("params.yaml is valid")


if __name__ == "__main__":
    main()
