"""Shared test helpers: params from params.yaml plus overrides, scratch repos, MLflow runs."""
