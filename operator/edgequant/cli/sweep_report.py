"""`edgequant sweep-report`: the operator's report Job writes a sweep's report.html and sweep.json.

The sweep (spec and the status the operator gathered) arrives in EDGEQUANT_SWEEP; storage credentials arrive as
in quantizer pods (secretKeyRef env vars), so the operator itself never holds them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgequant.api.worker_contract import SWEEP_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    from edgequant.api import sweep as sweep_api
    from edgequant.api.exitcodes import ExitCode
    from edgequant.sweep import local
    from edgequant.util.errors import EdgequantError

    raw = os.environ.get(SWEEP_ENV)
    if not raw:
        print(f"edgequant sweep-report: {SWEEP_ENV} is not set (the operator's report Job sets it)", file=sys.stderr)
        return int(ExitCode.INVALID_INPUT)
    document = json.loads(raw)
    spec = sweep_api.QuantizationSweepSpec.model_validate(document["spec"])
    try:
        uri = local.publish(document["metadata"]["name"], spec, document["status"], base_dir=None)
    except EdgequantError as exc:
        print(f"edgequant sweep-report: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(f"sweep report: {uri}")
    return 0
