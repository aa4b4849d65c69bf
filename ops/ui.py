"""Where to open the MLflow UI on this project's runs (`make ui` prints it).

MLflow 3.17's UI opens every experiment on its GenAI overview unless the workflow
switch says "Model training": a per-browser setting (default GenAI) that the URL
parameter ``workflowType=machine_learning`` overrides; the experiment's
``mlflow.experimentKind`` tag is not consulted while that switch exists. So point at
the experiment's runs table with that parameter.
"""

from __future__ import annotations

import argparse
import sys

from mnistlab.harness.tracking_store import EXPERIMENT


def ui_url(base: str, uri: str) -> str:
    """The runs table of the project's experiment in the UI served at ``base``."""
    import mlflow

    base = base.rstrip("/")
    exp = mlflow.MlflowClient(uri).get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return f"{base}/#/?workflowType=machine_learning"
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="http://HOST:PORT of the UI")
    parser.add_argument("--uri", required=True, help="the tracking store")
    args = parser.parse_args(argv)
    print(f"MLflow UI: open {ui_url(args.base, args.uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
