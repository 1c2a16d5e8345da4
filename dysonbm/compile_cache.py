"""The `dbm` command's persistent compilation cache: a program compiled once is loaded from disk
by every later run of the same shapes (a rerun, a resume, the next sweep of that size).

The cache is JAX's own (``jax_compilation_cache_dir``). JAX keys an entry on the lowered
program, the versions of jax and jaxlib, the backend and the compile options, so an entry is
reused only for the identical program and a run's numbers are those of a fresh compilation,
bit for bit. Every program is stored, however quick to compile (JAX's own threshold is 1 s):
a run's dozen small helpers take 0.2–0.3 s to compile and a few milliseconds to load.

    DBM_COMPILE_CACHE unset   ${XDG_CACHE_HOME:-~/.cache}/dysonbm/xla
    DBM_COMPILE_CACHE=DIR     DIR
    DBM_COMPILE_CACHE=off     no cache

A JAX cache the user set up (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left as it
is. Importing `dysonbm` changes no JAX setting; from Python, turn the cache on with
``jax.config.update("jax_compilation_cache_dir", DIR)``. The directory is not pruned (JAX's
default); ``rm -r`` it at any time, and ``dbm info`` shows its size.

JAX writes an entry in place, not atomically. An entry left empty by a process interrupted
between creating and writing it would be read, fail and be recompiled by every later run
(JAX warns each time), so `configure` removes empty entries; one cut short mid-write is
reported the same way, and removing the directory clears it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "DBM_COMPILE_CACHE"
MIN_COMPILE_S = 0.0
_OFF = ("off", "0", "no", "false", "none")
_hits = 0
_listening = False


def location(environ=os.environ) -> Path | None:
    """The cache directory ``environ`` asks for (module doc), or None for no cache."""
    value = environ.get(ENV)
    if value is not None:
        value = value.strip()
        return None if not value or value.lower() in _OFF else Path(value).expanduser()
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dysonbm" / "xla"


def _jax_dir(environ) -> str | None:
    if "jax" in sys.modules:
        import jax

        return jax.config.jax_compilation_cache_dir
    return environ.get("JAX_COMPILATION_CACHE_DIR")


def configure(environ=os.environ) -> str | None:
    """Turn the cache on for this process, before its first compilation. Returns a one-line
    note when the directory cannot be used (the run then compiles as without a cache)."""
    if _jax_dir(environ):
        return None
    try:
        path = location(environ)
    except RuntimeError:  # Path.home() without HOME or a password entry
        return f"compilation cache off: no home directory (set {ENV}=DIR)"
    if path is None:
        return None
    problem = _unusable(path)
    if problem:
        return f"compilation cache off: {problem}"
    _remove_empty_entries(path)
    settings = {"jax_compilation_cache_dir": str(path)}
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        settings["jax_persistent_cache_min_compile_time_secs"] = MIN_COMPILE_S
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:  # read by jax at import; spares `dbm configs` and `--help` the import
        environ.update({name.upper(): str(value) for name, value in settings.items()})
    return None


def _unusable(path: Path) -> str | None:
    """Why ``path`` cannot hold the cache, or None. Nothing is created here (JAX makes the
    folder at its first compilation), so a command refused for bad input writes nothing."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot create {path} ({probe} is not a folder)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _remove_empty_entries(path: Path) -> None:
    if not path.is_dir():
        return
    try:
        for entry in path.glob("*-cache"):
            if entry.is_file() and entry.stat().st_size == 0:
                entry.unlink(missing_ok=True)
    except OSError:  # another process removed it first, or the folder went: nothing to mend
        pass


def hits() -> int:
    """Programs this process has loaded from the persistent cache so far."""
    _listen()
    return _hits


def _listen() -> None:
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_listener(_on_event)
        _listening = True


def _on_event(event: str, **kwargs) -> None:
    global _hits
    if event == "/jax/compilation_cache/cache_hits":
        _hits += 1


def describe() -> str:
    """Where this process's cache is and what it holds (for ``dbm info``)."""
    import jax

    where = jax.config.jax_compilation_cache_dir
    if not where:
        return "compilation cache: off"
    files = [p for p in Path(where).glob("*-cache") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    return f"compilation cache: {where} ({len(files)} programs, {size / 2**20:.1f} MiB)"
