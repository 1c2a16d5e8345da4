"""The `dbm` command: a thin layer over the library.

Bad input prints one line naming the field and the value and exits with status 2, before
anything is written. An existing directory is replaced (--overwrite) or continued
(--resume) only if dbm wrote it. SIGINT and SIGTERM stop a run at a segment boundary or
sooner, keep its checkpoint and print one line with the command that resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

EXAMPLES = """\
examples:
  dbm configs                                        # the shipped presets, one line each
  dbm run ts_quick                                   # a preset by name; results in results/ts_quick
  dbm run ts_quick --set steps=500 --set train.lr=0.05 --out /tmp/ts
  dbm run my_sweep.toml                              # or a TOML file of your own
  dbm run multilayer_quick --set "sweep.init_std=[0.5, 16]" --overwrite
  dbm show results/ts_quick                          # summary table per grid point
  dbm run ts_quick --dry-run                         # memory, chunks, estimated wall time
  dbm run ts_quick --resume                          # continue an interrupted run
  dbm run ts_quick --shard 0/2 --out r/p0            # and 1/2 elsewhere, then:
  dbm merge r/p0 r/p1 --out results/ts_quick
  dbm info                                           # devices and versions
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other bad input (usage stays in --help)."""

    def error(self, message):
        self.exit(2, f"dbm: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from dysonbm._version import __version__

    p = _Parser(
        prog="dbm",
        description="Random-matrix dynamics of learning: SGD replicas and Dyson Brownian motion in JAX.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"dbm (dysonbm) {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment from a TOML config", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help="a preset name (see dbm configs) or the path of a TOML config")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. train.lr=0.05, steps=1000, 'sweep.lr=[0.1,0.2]'")
    run.add_argument("--out", help="results directory (default: results/<name>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results directory")
    run.add_argument("--devices", type=int, default=None, help="devices to shard replicas over (default: all)")
    run.add_argument("--chunk-size", type=int, default=None, help="replicas per compiled chunk")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint in --out (or say the results are complete)")
    run.add_argument("--dry-run", action="store_true",
                     help="print grid size, memory, chunks and a calibrated wall time; write nothing")
    run.add_argument("--shard", metavar="I/N", help="run only the I-th of N parts of the replicas (join with dbm merge)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="multi-process job: address of process 0 (or JAX_COORDINATOR_ADDRESS)")
    run.add_argument("--num-processes", type=int, metavar="N", help="multi-process job: processes (or JAX_NUM_PROCESSES)")
    run.add_argument("--process-id", type=int, metavar="I", help="multi-process job: this process (or JAX_PROCESS_ID)")

    merge = sub.add_parser("merge", help="join the results of dbm run --shard into one results directory")
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="shard results directories")
    merge.add_argument("--out", required=True, help="merged results directory")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing results directory")

    show = sub.add_parser("show", help="summarise a results directory")
    show.add_argument("dir")

    from dysonbm.reproduce import REGISTRY

    rep = sub.add_parser("reproduce", help="run a published experiment end to end and write a report")
    rep.add_argument("name", choices=sorted(REGISTRY))
    rep.add_argument("--quick", action="store_true", help="a preset that finishes on a laptop CPU")
    rep.add_argument("--preset", help="a named preset (phase-diagram: quick, medium, full)")
    rep.add_argument("--only", help="one part of the reproduction (linear-scaling: ts, rbm)")
    rep.add_argument("--out", help="output directory (default: results/<name>[-quick])")
    rep.add_argument("--overwrite", action="store_true", help="rerun into an existing output directory of this reproduction")
    rep.add_argument("--resume", action="store_true", help="continue an interrupted reproduction (finished runs are reused)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    plot = sub.add_parser("plot", help="draw the figures of a results directory (PNG)")
    plot.add_argument("dir")
    plot.add_argument("--out", help="folder for the figures (default: DIR/figures)")

    cfgs = sub.add_parser("configs", help="list the shipped presets (dbm run NAME), or print one")
    cfgs.add_argument("name", nargs="?", help="print this preset's TOML (e.g. dbm configs ts_quick > mine.toml)")
    sub.add_parser("info", help="devices and versions")
    from dysonbm import spectrum_cli

    spectrum_cli.add_parser(sub)
    return p


def fail(message: str) -> int:
    print(f"dbm: error: {message}", file=sys.stderr)
    return 2


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard = '{text}': expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard = '{text}': need 0 <= I < N")
    return i, n


def _distributed(args) -> tuple[str, int, int] | None:
    """(coordinator, processes, process id) from the flags or JAX_* variables, or None."""
    env = os.environ
    coord = args.coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    n = args.num_processes if args.num_processes is not None else env.get("JAX_NUM_PROCESSES")
    i = args.process_id if args.process_id is not None else env.get("JAX_PROCESS_ID")
    if coord is None and n is None and i is None:
        return None
    if coord is None or n is None or i is None:
        raise ValueError("--coordinator, --num-processes and --process-id: give all three (or none)")
    try:
        n, i = int(n), int(i)
    except ValueError:
        raise ValueError(f"--num-processes = {n!r}, --process-id = {i!r}: expected integers") from None
    if not 0 <= i < n:
        raise ValueError(f"--process-id = {i}: need 0 <= id < --num-processes = {n}")
    return coord, n, i


def cmd_run(args) -> int:
    from dysonbm.config import ConfigError, load, parse_set_args

    try:
        cfg = load(args.config, parse_set_args(args.overrides))
    except ConfigError as err:
        return fail(str(err))
    for name in ("devices", "chunk_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return fail(f"--{name.replace('_', '-')} = {value}: must be positive")
    try:
        shard = _parse_shard(args.shard) if args.shard else None
        dist = _distributed(args)
    except ValueError as err:
        return fail(str(err))
    if shard and dist:
        return fail("--shard: not with a multi-process job (each process runs the shard of its id)")
    if args.resume and args.overwrite:
        return fail("--resume and --overwrite: choose one")
    out = Path(args.out) if args.out else Path("results") / cfg.name
    part = shard or (dist and (dist[2], dist[1]))

    from dysonbm import io, runner, sizes

    try:
        sizes.check_sizes(cfg, part)  # before anything proportional to the run is allocated
    except ConfigError as err:
        return fail(str(err))
    if args.dry_run:
        try:
            with interrupts_raise():
                plan = runner.Plan(cfg, devices=args.devices, chunk_size=args.chunk_size, shard=part)
                sizes.check_plan(plan)
                text = runner.dry_run(plan)
        except KeyboardInterrupt as err:
            return interrupted(err, "", "dry-run")
        except (ConfigError, ValueError) as err:
            return fail(str(err))
        except RuntimeError as err:
            return _device_error(err)
        print(text)
        print(f"  grid: {io.grid_text(cfg.to_dict())}")
        return 0

    status = runner.state_of(out)  # a multi-process job's DIR is complete once merged
    if status != "missing" and not (args.overwrite or args.resume) and not dist:
        return fail(f"--out = '{out}': exists (use --overwrite to replace it, --resume to continue it)")
    problem = out_problem(out, replace=status != "missing")
    if problem:
        return fail(problem)
    if args.resume and status == "complete":
        try:
            found = runner.results_mismatch(io.load(out).manifest, cfg, None if dist else shard)
        except (FileNotFoundError, ValueError) as err:
            return fail(str(err))
        if found:
            return fail(f"--resume: {out} holds the complete results of another config ({found}); "
                        "rerun with the same config, or with --overwrite")
        print(f"{out}: results complete, nothing to resume")
        return 0

    kw = dict(overwrite=args.overwrite, progress=not args.quiet, devices=args.devices,
              chunk_size=args.chunk_size, resume=args.resume)
    try:
        with interrupts_raise():
            if dist:
                import jax

                jax.distributed.initialize(coordinator_address=dist[0], num_processes=dist[1], process_id=dist[2])
                results = runner.run_distributed(cfg, out, process_id=dist[2], num_processes=dist[1], **kw)
                if dist[2] != 0:
                    out = out / f"part-{dist[2]}"
            else:
                results = runner.run(cfg, out=out, shard=shard, **kw)
    except KeyboardInterrupt as err:
        state = runner.state_of(out / f"part-{dist[2]}" if dist and runner.state_of(out) != "complete" else out)
        return interrupted(err, _resume_command(args, out), state)
    except (ConfigError, ValueError, FileExistsError) as err:  # CheckpointError is a ValueError
        return fail(str(err))
    except OSError as err:  # a disk that fills up, a folder removed under the run
        return fail(f"--out = '{out}': {err.strerror or err} ({err.filename or out})")
    except MemoryError:
        return fail(f"--out = '{out}': out of host memory (try fewer replicas or snapshots)")
    except RuntimeError as err:
        return _device_error(err)
    print(results.summary())
    print(f"results written to {out}")
    return 0


def _device_error(err: RuntimeError) -> int:
    """One line for a device that ran out of memory (the size checks count only what they
    can see); any other runtime error is a bug and keeps its traceback."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if "RESOURCE_EXHAUSTED" not in text:
        raise err
    return fail(f"out of device memory ({text}); try a smaller --chunk-size, batch_size or dataset")


def _resume_command(args, out: Path) -> str:
    """The command line that continues this run from its checkpoint."""
    parts = ["dbm", "run", args.config]
    for item in args.overrides:
        parts += ["--set", item]
    parts += ["--out", str(out), "--resume"]
    for flag in ("devices", "chunk_size", "shard", "coordinator", "num_processes", "process_id"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.quiet:
        parts.append("--quiet")
    return shlex.join(parts)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the main thread is; ``args[0]`` is the signal number."""


@contextlib.contextmanager
def interrupts_raise():
    """SIGINT and SIGTERM raise `Interrupted` (SIGTERM would otherwise end the process
    without unwinding: no temporary file removed, no line printed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupted(err: KeyboardInterrupt, resume: str, done: str = "missing") -> int:
    """One line for a stopped command (``done``: the `runner.state_of` its output was left
    in) with the command that resumes it; the exit status is 128 + the signal number."""
    signum = err.args[0] if isinstance(err, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    if sys.stderr.isatty():
        print(file=sys.stderr)  # past a progress line rewritten in place
    if done == "complete":
        print(f"dbm: {name}: stopped after the results were complete", file=sys.stderr)
    elif not resume:
        print(f"dbm: {name}: stopped, nothing was written", file=sys.stderr)
    else:
        kept = "the checkpoint is kept" if done == "checkpoint" else "nothing was saved yet"
        print(f"dbm: {name}: stopped, {kept}; resume with: {resume}", file=sys.stderr)
    return 128 + signum


def out_problem(out: Path, replace: bool = False, renamed: bool = True, flag: str = "--out") -> str | None:
    """Why nothing can be written at ``out``, decided before anything runs, or None.

    Refused: a path under a file, a folder that cannot be written, (with ``replace``) an
    existing ``out`` that dbm did not write, and (where the folder is ``renamed`` into
    place) the current directory or one above it, which cannot be renamed away.
    """
    from dysonbm import io

    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except OSError as err:
        return f"{flag} = '{out}': {err.strerror or err}"
    if renamed and (target == here or target in here.parents):
        return f"{flag} = '{out}': the current directory or one above it; give a folder to create or replace"
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            return f"{flag} = '{out}': exists and is not a directory"
        if replace:
            reason = io.not_ours(out)
            if reason:
                return f"{flag} = '{out}': {reason}; dbm replaces only a directory it wrote"
        why = _cannot_write(out)
        if why:
            return f"{flag} = '{out}': cannot write in it ({why})"
    base = next((p for p in out.parents if p.exists() or p.is_symlink()), Path("."))
    if not base.is_dir():
        return f"{flag} = '{out}': {base} is not a directory"
    why = _cannot_write(base)
    if why:
        return f"{flag} = '{out}': cannot write in {base} ({why})"
    return None


def _cannot_write(folder: Path) -> str | None:
    """Create and remove a probe folder: the one test of writability that root, ACLs and
    read-only mounts all answer truthfully."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dbm-probe-", dir=folder))
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def cmd_merge(args) -> int:
    from dysonbm import io

    out = Path(args.out)
    exists = out.exists() or out.is_symlink()
    if exists and not args.overwrite:
        return fail(f"--out = '{out}': exists (use --overwrite to replace it)")
    problem = out_problem(out, replace=exists)
    if problem:
        return fail(problem)
    try:
        merged = io.merge([io.load(d) for d in args.dirs])
    except (FileNotFoundError, ValueError) as err:  # MergeError is a ValueError
        return fail(str(err))
    try:
        io.save(merged, out, overwrite=args.overwrite)
    except FileExistsError as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"--out = '{out}': {err.strerror or err}")
    print(merged.summary())
    print(f"merged {len(args.dirs)} shards into {out}")
    return 0


def cmd_show(args) -> int:
    from dysonbm import io

    try:
        results = io.load(args.dir)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(results.summary())
    return 0


def cmd_reproduce(args) -> int:
    from dysonbm import reproduce
    from dysonbm.config import ConfigError
    from dysonbm.runner import CheckpointError

    module = reproduce.get(args.name)
    options = {}
    for flag, table, key in (("preset", "PRESETS", "preset"), ("only", "PARTS", "parts")):
        value = getattr(args, flag)
        if value is None:
            continue
        known = getattr(module, table, None)
        if not known:
            return fail(f"--{flag} = {value!r}: `dbm reproduce {args.name}` takes no --{flag}")
        if value not in known:
            return fail(f"--{flag} = {value!r}: one of {', '.join(known)}")
        options[key] = value if key == "preset" else (value,)
    if args.quick and options.get("preset", "quick") != "quick":
        return fail(f"--quick and --preset = {args.preset!r}: choose one")
    suffix = "-" + args.preset if args.preset else ("-quick" if args.quick else "")
    out = Path(args.out) if args.out else Path("results") / (args.name + suffix + (f"-{args.only}" if args.only else ""))
    if args.resume and args.overwrite:
        return fail("--resume and --overwrite: choose one")
    problem = out_problem(out, renamed=False) or reproduce.out_problem(module, out, args.overwrite or args.resume)
    if problem:
        return fail(problem)
    resume = ["dbm", "reproduce", args.name, *(["--quick"] if args.quick else []),
              *(["--preset", args.preset] if args.preset else []), *(["--only", args.only] if args.only else []),
              "--out", str(out), "--resume", *(["--quiet"] if args.quiet else [])]
    try:
        with interrupts_raise():
            report = module.run(out, quick=args.quick, progress=not args.quiet, resume=args.resume, **options)
    except KeyboardInterrupt as err:
        return interrupted(err, shlex.join(resume), "checkpoint" if out.is_dir() else "missing")
    except (ConfigError, CheckpointError, FileExistsError) as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"--out = '{out}': {err.strerror or err} ({err.filename or out})")
    print(f"report written to {report}")
    return 0


def cmd_plot(args) -> int:
    from dysonbm import io
    from dysonbm.plots import linear_scaling as plots

    try:
        results = io.load(args.dir)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    out = Path(args.out) if args.out else Path(args.dir) / "figures"
    problem = out_problem(out, renamed=False)
    if problem:
        return fail(problem)
    try:
        written = plots.plot_results(results, out)
    except OSError as err:
        return fail(f"--out = '{out}': {err.strerror or err}")
    if not written:
        return fail(f"{args.dir}: no figure applies to model {results.config['model']['name']!r}")
    for path in written:
        print(path)
    return 0


def cmd_configs(args) -> int:
    from dysonbm import presets

    names = presets.names()
    if args.name is not None:
        if args.name not in names:
            return fail(f"configs = {args.name!r}: no such preset (one of: {', '.join(names)})")
        sys.stdout.write(presets.path(args.name).read_text(encoding="utf-8"))
        return 0
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {presets.summary(name)}")
    return 0


def cmd_info(args) -> int:
    import jax
    import optax

    from dysonbm import compile_cache
    from dysonbm._version import __version__

    print(f"dysonbm {__version__}  jax {jax.__version__}  jaxlib {jax.lib.__version__}  optax {optax.__version__}")
    print(f"backend: {jax.default_backend()}")
    for d in jax.devices():
        print(f"  {d.id}: {d.platform} {getattr(d, 'device_kind', '')}")
    print(f"x64: {jax.config.jax_enable_x64}")
    print(compile_cache.describe())
    return 0


def _backend_started() -> bool:
    """Whether XLA has started, after which a change of XLA_FLAGS has no effect."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public query; jax.distributed.initialize uses the same

    return xla_bridge.backends_are_initialized()


def configure_host_devices() -> None:
    """On CPU, expose one XLA device per core so replicas shard over all cores.

    Must run before jax's first computation (XLA reads its flags when the backend starts, not
    at ``import jax``); an explicit XLA_FLAGS device count is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or _backend_started():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    configure_host_devices()
    from dysonbm import compile_cache, spectrum_cli

    note = compile_cache.configure()
    if note:
        print(f"dbm: note: {note}", file=sys.stderr)

    commands = {"run": cmd_run, "show": cmd_show, "info": cmd_info, "reproduce": cmd_reproduce, "plot": cmd_plot,
                "merge": cmd_merge, "spectrum": spectrum_cli.main, "configs": cmd_configs}
    try:
        return commands[args.command](args)
    except BrokenPipeError:  # `dbm show DIR | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
