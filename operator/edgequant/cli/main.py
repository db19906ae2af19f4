"""The `edgequant` command. Subcommands live in their own modules, imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help). Each module has add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("edgequant.cli.validate", "check QuantizationJob manifests offline"),
    "crd": ("edgequant.cli.crd", "print the QuantizationJob CustomResourceDefinition"),
    "operator": ("edgequant.cli.operator", "run the Kubernetes operator (kopf)"),
    "run": ("edgequant.cli.run", "run QuantizationJobs locally, in this process (file:// or s3://)"),
    "sweep-report": (
        "edgequant.cli.sweep_report",
        "write a QuantizationSweep's combined report.html (run by the operator's report Job)",
    ),
    "report": ("edgequant.cli.report", "render a report.json as self-contained HTML and optionally open it"),
    "pin": (
        "edgequant.cli.pin",
        "write a run's recommended method, options and pinned layers into a QuantizationJob manifest (--check for CI)",
    ),
    "tensorrt-calibrate": (
        "edgequant.cli.tensorrt_calibrate",
        "compute a TensorRT job's INT8 calibration cache on the CPU (no GPU needed)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgequant", description="Quantize vision models for edge devices, on Kubernetes or locally."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if "--help" in sys.argv or "-h" in sys.argv:
            # Import only the chosen module to add its flags; never all of them.
            pass
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        sp = argparse.ArgumentParser(prog=f"edgequant {argv[0]}", description=COMMANDS[argv[0]][1])
        module.add_arguments(sp)
        args = sp.parse_args(argv[1:])
        return int(module.run(args))
    args = parser.parse_args(argv)
    parser.print_help()
    return 0 if args.command is None and not argv else 2


if __name__ == "__main__":
    sys.exit(main())
