"""The `dbm` command: a thin layer over the library.

Bad input prints one line naming the field and the value and exits with status 2, before
anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  dbm run configs/ts_quick.toml                      # results in results/ts_quick
  dbm run configs/ts_quick.toml --set steps=500 --set train.lr=0.05 --out /tmp/ts
  dbm run configs/multilayer_quick.toml --set "sweep.init_std=[0.5, 16]" --overwrite
  dbm show results/ts_quick                          # summary table per grid point
  dbm info                                           # devices and versions
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dbm",
        description="Random-matrix dynamics of learning: SGD replicas and Dyson Brownian motion in JAX.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment from a TOML config", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help="path to a TOML config (see configs/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. train.lr=0.05, steps=1000, 'sweep.lr=[0.1,0.2]'")
    run.add_argument("--out", help="results directory (default: results/<name>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results directory")
    run.add_argument("--devices", type=int, default=None, help="devices to shard replicas over (default: all)")
    run.add_argument("--chunk-size", type=int, default=None, help="replicas per compiled chunk")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    show = sub.add_parser("show", help="summarise a results directory")
    show.add_argument("dir")

    from dysonbm.reproduce import REGISTRY

    rep = sub.add_parser("reproduce", help="run a published experiment end to end and write a report")
    rep.add_argument("name", choices=sorted(REGISTRY))
    rep.add_argument("--quick", action="store_true", help="a preset that finishes on a laptop CPU")
    rep.add_argument("--out", help="output directory (default: results/<name>[-quick])")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    plot = sub.add_parser("plot", help="draw the figures of a results directory (PNG)")
    plot.add_argument("dir")
    plot.add_argument("--out", help="folder for the figures (default: DIR/figures)")

    sub.add_parser("info", help="devices and versions")
    return p


def fail(message: str) -> int:
    print(f"dbm: error: {message}", file=sys.stderr)
    return 2


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
    out = Path(args.out) if args.out else Path("results") / cfg.name
    if out.exists() and not args.overwrite:
        return fail(f"--out = '{out}': exists (use --overwrite to replace it)")

    from dysonbm import runner

    try:
        results = runner.run(cfg, out=out, overwrite=args.overwrite, progress=not args.quiet,
                             devices=args.devices, chunk_size=args.chunk_size)
    except (ConfigError, ValueError) as err:
        return fail(str(err))
    print(results.summary())
    print(f"results written to {out}")
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

    out = Path(args.out) if args.out else Path("results") / (args.name + ("-quick" if args.quick else ""))
    report = reproduce.get(args.name).run(out, quick=args.quick, progress=not args.quiet)
    print(f"report written to {report}")
    return 0


def cmd_plot(args) -> int:
    from dysonbm import io, plots

    try:
        results = io.load(args.dir)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    out = Path(args.out) if args.out else Path(args.dir) / "figures"
    written = plots.plot_results(results, out)
    if not written:
        return fail(f"{args.dir}: no figure applies to model {results.config['model']['name']!r}")
    for path in written:
        print(path)
    return 0


def cmd_info(args) -> int:
    import jax
    import optax

    from dysonbm import __version__

    print(f"dysonbm {__version__}  jax {jax.__version__}  jaxlib {jax.lib.__version__}  optax {optax.__version__}")
    print(f"backend: {jax.default_backend()}")
    for d in jax.devices():
        print(f"  {d.id}: {d.platform} {getattr(d, 'device_kind', '')}")
    print(f"x64: {jax.config.jax_enable_x64}")
    return 0


def configure_host_devices() -> None:
    """On CPU, expose one XLA device per core so replicas shard over all cores.

    Must run before jax is imported; an explicit XLA_FLAGS device count is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
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
    commands = {"run": cmd_run, "show": cmd_show, "info": cmd_info, "reproduce": cmd_reproduce, "plot": cmd_plot}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
