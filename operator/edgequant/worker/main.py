"""``edgequant-worker``: the quantizer pod's entry point.

Reads the job (JSON: a whole QuantizationJob or its spec) from the positional
argument, ``--spec-file``, or the spec variable (``edgequant.api.worker_contract``); runs the pipeline
with progress on stderr; writes the compact WorkerResult to the termination
message path; exits with an ``edgequant.api.exitcodes.ExitCode``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.worker_contract import (
    BROKER_FD_ENV,
    SANDBOX_ENV,
    SANDBOX_ON,
    SPEC_ENV,
    TERMINATION_LOG_ENV,
    TERMINATION_MESSAGE_PATH,
    WORKDIR_ENV,
)
from edgequant.util.errors import EdgequantError, InvalidInputError

if TYPE_CHECKING:
    from edgequant.api.v1alpha1 import QuantizationJobSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgequant-worker",
        description=f"Run one QuantizationJob spec (JSON) and publish the artifact and report.json. Without arguments the spec is read from ${SPEC_ENV}.",
    )
    parser.add_argument("spec", nargs="?", help="the spec as JSON (a QuantizationJob or its spec)")
    parser.add_argument("--spec-file", type=Path, help="read the JSON (or YAML) spec from this file")
    parser.add_argument(
        "--workdir",
        type=Path,
        help=f"scratch folder (default ${WORKDIR_ENV} or a temporary folder, removed afterwards)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder for debugging")
    return parser


def _read_document(args: argparse.Namespace) -> object:
    if args.spec:
        text, where = args.spec, "the spec argument"
    elif args.spec_file:
        try:
            text, where = args.spec_file.read_text(), str(args.spec_file)
        except OSError as exc:
            raise InvalidInputError(f"--spec-file {args.spec_file}: {exc.strerror}") from exc
    elif os.environ.get(SPEC_ENV):
        text, where = os.environ[SPEC_ENV], f"${SPEC_ENV}"
    else:
        raise InvalidInputError(f"no spec given: pass it as an argument, with --spec-file, or in ${SPEC_ENV}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_exc:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise InvalidInputError(f"{where} is not valid JSON: {json_exc}") from json_exc


def _sandbox_spec(args: argparse.Namespace) -> QuantizationJobSpec | None:
    """The spec, when this process is to run the pipeline as a credential-free child (worker/sandbox.py): the Job
    sets SANDBOX_ENV; the child itself has a broker instead. None: run in this process (also when the spec
    is unreadable, so that the usual path reports it)."""
    if os.environ.get(SANDBOX_ENV) != SANDBOX_ON or os.environ.get(BROKER_FD_ENV):
        return None
    try:
        from edgequant.worker.runner import spec_from_document

        return spec_from_document(_read_document(args))[0]
    except EdgequantError:
        return None


def write_termination_message(result: WorkerResult) -> Path | None:
    """Write where Kubernetes reads it; returns the path, or None when it is not writable (local runs)."""
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_MESSAGE_PATH))
    try:
        path.write_text(result.to_termination_message())
    except OSError as exc:
        print(f"edgequant-worker: cannot write the termination message to {path}: {exc.strerror}", file=sys.stderr)
        return None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = _sandbox_spec(args)
    if spec is not None:
        from edgequant.worker.sandbox import main_as_parent

        return main_as_parent(list(sys.argv[1:] if argv is None else argv), spec)
    workdir = args.workdir or (Path(os.environ[WORKDIR_ENV]) if os.environ.get(WORKDIR_ENV) else None)
    temporary = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="edgequant-"))
    try:
        try:
            from edgequant.worker.progress import LogProgress
            from edgequant.worker.runner import run_job, spec_from_document

            spec, name, namespace = spec_from_document(_read_document(args))
            print(f"edgequant-worker: {spec.method.value} for {name or 'an unnamed job'}", file=sys.stderr)
            result, _ctx = run_job(
                spec, workdir=workdir, progress=LogProgress(), job_name=name, job_namespace=namespace
            )
        except EdgequantError as exc:
            result = WorkerResult.for_exit(exc.exit_code, str(exc))
        except Exception as exc:
            traceback.print_exc()
            result = WorkerResult.for_exit(ExitCode.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")
        write_termination_message(result)
        print(result.to_termination_message())
        print(f"edgequant-worker: {result.reason}: {result.message}", file=sys.stderr)
        return result.exit_code
    finally:
        if temporary and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
