"""`edgequant validate FILE...`: every error with its field path and fix; exit 0 valid, 2 invalid.

Warnings (ignored or suspicious settings, `edgequant.api.validation.WARNING_RULES`) are printed after the
"valid" line and never change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from edgequant.api import validation

EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="YAML manifests (several documents per file allowed)"
    )


def run(args: argparse.Namespace) -> int:
    invalid = 0
    for path in args.files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except FileNotFoundError:
            print(f"{path}: no such file", file=sys.stderr)
            invalid += 1
            continue
        except yaml.YAMLError as exc:
            print(f"{path}: not valid YAML: {exc}", file=sys.stderr)
            invalid += 1
            continue
        if not docs:
            print(f"{path}: empty file (fix: write a QuantizationJob manifest)", file=sys.stderr)
            invalid += 1
        for index, doc in enumerate(docs):
            where = f"{path}" if len(docs) == 1 else f"{path}[{index}]"
            if isinstance(doc, dict) and doc.get("kind") == "QuantizationSweep":
                invalid += _validate_sweep(doc, where)
                continue
            if isinstance(doc, dict) and doc.get("kind") not in (None, "QuantizationJob"):
                continue  # other kinds in the same file (Secrets, ConfigMaps) are not ours to check
            job, problems = validation.validate_document(doc)
            if problems:
                invalid += 1
                for problem in problems:
                    print(f"{where}: {problem}", file=sys.stderr)
            else:
                assert job is not None
                warnings = validation.spec_warnings(job.spec)
                print(
                    f"{where}: valid QuantizationJob {job.metadata.name or '(unnamed)'} ({job.spec.method.value})"
                    + (f", {len(warnings)} warning(s)" if warnings else "")
                )
                for warning in warnings:
                    print(f"{where}: warning: {warning}")
    return EXIT_INVALID if invalid else 0


def _validate_sweep(doc: dict[str, object], where: str) -> int:
    """1 when the sweep cannot run (every problem printed with its field), else 0 (its cells and skipped ones printed)."""
    from edgequant.sweep import plan

    try:
        sweep = plan.parse(doc)
    except plan.SweepSpecError as exc:
        for problem in str(exc).split("; "):
            print(f"{where}: {problem}", file=sys.stderr)
        return 1
    name = sweep.metadata.name or "(unnamed)"
    cells, skipped = plan.expand(name, sweep.spec)
    print(f"{where}: valid QuantizationSweep {name} ({len(cells)} cells: {', '.join(c.name for c in cells)})")
    for s in skipped:
        print(f"{where}: skipped: {s.target or '-'} / {s.method}: {s.reason}")
    return 0
