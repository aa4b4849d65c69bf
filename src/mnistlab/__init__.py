"""mnistlab: a reproducible DVC + MLflow study of small MNIST CNNs (train, inspect, attack).

Every stage imports this file; it stays a docstring so no stage needs to declare it.
"""
