"""Errors that end a stage with a one-line message instead of a traceback."""


class MnistlabError(Exception):
    """An expected failure (bad params, bad data, bad checkpoint): shown as one line."""


class ParamsError(MnistlabError):
    """``params.yaml`` is missing, malformed or invalid."""


class DataError(MnistlabError):
    """MNIST files are missing, corrupt, or no source could provide them."""


class CheckpointError(MnistlabError):
    """A model checkpoint is missing or unreadable."""


class TrackingError(MnistlabError):
    """The MLflow tracking store cannot be reached."""


class TrainingError(MnistlabError):
    """Training diverged (a non-finite loss); nothing is written or registered."""


class OutputError(MnistlabError):
    """An output cannot be written as declared (e.g. a NaN in a strict JSON metrics file)."""


class StageBusyError(MnistlabError):
    """Another process is running the same stage on the same outputs."""
