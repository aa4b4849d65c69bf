"""DVC stage entry points: `python -m stages.<name>`; each only wires (params in, library
call, outputs out, MLflow run). This package file stays empty so no stage declares it.
"""
