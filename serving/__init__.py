"""Serve a registered mnistlab model over HTTP: MLflow's scoring server behind a guard.

Not a pipeline stage (no stage imports it, so editing it reruns nothing): ``make serve``
runs ``python -m serving``. :mod:`serving.validate` checks a request body without
MLflow; :mod:`serving.app` wraps MLflow's FastAPI app with that check and a size cap.
"""
