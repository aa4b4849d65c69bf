"""Adversarial attacks, one package per form (``attack@<form>-<model>``) plus ``common``.

This package file stays a docstring, so no stage needs to declare it.
"""
