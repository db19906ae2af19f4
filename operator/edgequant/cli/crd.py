"""`edgequant crd`: print the CRD generated from the API models."""

from __future__ import annotations

import argparse
import sys

from edgequant.api import crd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    sys.stdout.write(crd.render_crd_yaml())
    return 0
