"""mnistlab: a reproducible study of two small MNIST CNNs (train, inspect, attack)."""

__version__ = "0.1.0"
