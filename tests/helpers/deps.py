"""What a stage really imports: its first-party science modules, found with ``ast`` (no torch).

A stage's ``cmd`` is ``python -m stages <name>``: the launcher ``stages/__main__.py``
(harness) runs ``stages/<name>.py``, the stage's entry module. Its imports are followed
transitively through ``mnistlab`` and ``stages``, but never into the harness
(``src/mnistlab/harness``): like mlflow, the harness runs and records a stage and changes
no output byte, so it is no stage's dependency, and what it imports is not either.
Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those count.
The dynamic imports are module-level string constants (:data:`DYNAMIC`), formatted with
the stage's own arguments: ``FORM_PACKAGE``/``FORM_PARAMS`` with its ``--form``,
``ARCH_MODULE`` with the architecture of its ``--model`` (given by the caller, for the
stages that build a model from ``params.yaml``); one whose argument the stage lacks is
not followed.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

FIRST_PARTY = ("mnistlab", "stages")
HARNESS = "mnistlab.harness"
# Names of the module-level templates of dynamic imports (``"mnistlab.attacks.{form}"``).
DYNAMIC = ("FORM_PACKAGE", "FORM_PARAMS", "ARCH_MODULE")


def module_file(root: Path, module: str) -> Path | None:
    """The file of a first-party module, or ``None`` when ``module`` is not one."""
    parts = module.split(".")
    base = root / ("src" if parts[0] == "mnistlab" else "") / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(tree: ast.AST, args: dict[str, str] | None = None) -> set[str]:
    """First-party modules (and ``module.name``s) that ``tree`` imports anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (
            args is not None
            and isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and getattr(node.targets[0], "id", "") in DYNAMIC
        ):
            try:
                names.add(node.value.value.format(**args))
            except KeyError:  # the stage has no such argument: it does not import one
                pass
    return {n for n in names if n.split(".")[0] in FIRST_PARTY}


def is_harness(module: str) -> bool:
    return module == HARNESS or module.startswith(HARNESS + ".")


def imported_files(root: Path, entries: list[str], args: dict[str, str] | None = None) -> set[Path]:
    """Every first-party science file that running modules ``entries`` imports
    (transitively), stopping at the harness."""
    args = args or {}
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if is_harness(module):
            continue
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # parent packages run first
            path = module_file(root, ".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            pkg = ".".join(parts[:i])
            todo.extend(imported_names(ast.parse(path.read_text()), args) - {pkg})
    return seen


def entry_and_args(cmd: str) -> tuple[list[str], dict[str, str]]:
    """The stage module a ``cmd`` runs, and its ``--`` arguments.

    ``python -m stages x --form noise ...`` -> ``(["stages.x"], {"form": "noise", ...})``:
    the stage module the launcher (harness) runs.
    """
    words = shlex.split(cmd)
    entry = words[words.index("-m") + 1]
    entries = [f"{entry}.{words[words.index('-m') + 2]}"] if entry == "stages" else [entry]
    args = {
        w[2:].replace("-", "_"): v
        for w, v in zip(words, words[1:], strict=False)
        if w.startswith("--")
    }
    return entries, args
