"""`edgequant crd`: print (or write) the CRDs generated from the API models: QuantizationJob and QuantizationSweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgequant.api import crd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind", choices=sorted(crd.CRDS), default="QuantizationJob", help="the CRD printed (default QuantizationJob)"
    )
    parser.add_argument("--all", action="store_true", help="print every CRD, as one multi-document YAML stream")
    parser.add_argument(
        "--out-dir", type=Path, help="write every CRD into this folder, one file each (as crds/ holds them)"
    )


def run(args: argparse.Namespace) -> int:
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for kind, (_, filename) in crd.CRDS.items():
            (args.out_dir / filename).write_text(crd.render_crd_yaml(kind))
        return 0
    kinds = list(crd.CRDS) if args.all else [args.kind]
    sys.stdout.write("---\n".join(crd.render_crd_yaml(k) for k in kinds))
    return 0
