"""Stage `validate_params`: fail `dvc repro` on any invalid key in params.yaml.

Every other stage validates params too, but DVC reruns a stage only when the keys
it reads change; this stage depends on the whole file, so a typo anywhere (an
unknown key no stage reads) still stops the pipeline with a message naming it.
"""

from __future__ import annotations

import logging

from mnistlab.config import load_params
from mnistlab.stage import stage_main

log = logging.getLogger("mnistlab.validate_params")


@stage_main
def main(argv: list[str] | None = None) -> None:
    load_params()
    log.info("params.yaml is valid")


if __name__ == "__main__":
    main()
