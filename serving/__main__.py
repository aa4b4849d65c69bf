"""``python -m serving --model-uri URI``: serve a model with the guard (``make serve``).

The tracking store comes from ``MLFLOW_TRACKING_URI``. A model that cannot be loaded
(say the alias ``workspace`` is not set yet) ends the process with one line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from serving.app import DEFAULT_MAX_BYTES, build_app

log = logging.getLogger("serving")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True, help="e.g. models:/mnist-cnn_bn@workspace")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        app = build_app(args.model_uri, args.max_bytes)
    except Exception as err:  # noqa: BLE001 - any load failure is one line for the user
        lines = str(err).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        log.error(
            "cannot load %s: %s (register one with `dvc repro`, or serve another version: "
            "make serve MODEL_URI=models:/<name>/latest)",
            args.model_uri,
            reason[:300],
        )
        sys.exit(1)

    import uvicorn

    log.info("serving %s on http://%s:%d/invocations", args.model_uri, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, timeout_keep_alive=5)


if __name__ == "__main__":
    main()
