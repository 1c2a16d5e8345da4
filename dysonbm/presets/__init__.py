"""The shipped experiment configs (TOML), installed with the package and found by name.

``dbm run ts_quick`` and ``dysonbm.run("ts_quick")`` read ``ts_quick.toml`` from here; a path
to a TOML file works as well. The first comment line of each file is its one-line summary
(``dbm configs``). This module imports no jax.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".toml"


def _folder():
    return resources.files(__name__)


def names() -> list[str]:
    """Preset names, sorted."""
    return sorted(p.name[: -len(SUFFIX)] for p in _folder().iterdir() if p.name.endswith(SUFFIX))


def path(name: str) -> Path:
    """The file of preset ``name`` (KeyError if there is none)."""
    if name not in names():
        raise KeyError(name)
    return Path(str(_folder() / f"{name}{SUFFIX}"))


def summary(name: str) -> str:
    """The first comment line of a preset, without the ``#``."""
    for line in path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def lookup(text: str) -> Path | None:
    """The preset a config argument names: a bare name (``ts_quick``, or ``ts_quick.toml``)
    that is not a file here. A path, or an existing file, is left to the caller (None)."""
    if not text or "/" in text or "\\" in text or Path(text).exists():
        return None
    name = text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text
    return path(name) if name in names() else None
