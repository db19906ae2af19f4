"""`edgequant tensorrt-calibrate JOB.yaml --tensorrt-version X.Y.Z`: INT8 calibration for a TensorRT job, without a GPU.

Fetches the job's model and calibration data like the worker, computes the
ranges with ONNX Runtime on the CPU, and stores TensorRT's calibration cache
under the job's content-addressed cache prefix. The GPU job with the same spec
(tensorrt.calibrationDevice: cpu) then finds it and skips calibration.
Exit code: 0 when the cache is stored (or already was), else the worker's code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="JOB.yaml", help="a QuantizationJob manifest (tensorrt-int8 or tensorrt-mixed)"
    )
    parser.add_argument(
        "--tensorrt-version",
        required=True,
        metavar="X.Y.Z",
        help="TensorRT version of the quantizer-tensorrt image that will build the engine (cache headers name it)",
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary folder, removed afterwards)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from edgequant.api.backend_options import backend_options
    from edgequant.api.exitcodes import ExitCode
    from edgequant.backends.tensorrt.calibration import precompute_cpu_table
    from edgequant.backends.tensorrt.version import parse_version
    from edgequant.storage import Stores
    from edgequant.util.errors import EdgequantError, InvalidInputError
    from edgequant.worker.context import RunContext
    from edgequant.worker.progress import LogProgress
    from edgequant.worker.runner import spec_from_document
    from edgequant.worker.stages.data import validate_data
    from edgequant.worker.stages.fetch import fetch

    with tempfile.TemporaryDirectory(prefix="edgequant-trt-cal-") as scratch:
        workdir = args.workdir or Path(scratch)
        try:
            try:
                document = yaml.safe_load(args.file.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise InvalidInputError(f"{args.file}: {exc}") from exc
            spec, _name, _namespace = spec_from_document(document)
            version = parse_version(args.tensorrt_version)
            progress = LogProgress()
            ctx = RunContext(
                spec=spec,
                workdir=workdir,
                stores=Stores(storage=spec.storage, base_dir=args.file.parent),
                progress=progress,
            )
            fetch(ctx)
            validate_data(ctx)
            calibration = ctx.sets.get("calibration")
            assert ctx.model_path is not None
            finished = precompute_cpu_table(
                options=backend_options(spec),
                keep_float=spec.mixed_precision.pinned_layers,
                version=version,
                model_path=ctx.model_path,
                batches=calibration.batches() if calibration is not None else None,
                stores=ctx.stores,
                workdir=workdir / "tensorrt",
                log=progress.log,
            )
        except EdgequantError as exc:
            print(f"edgequant tensorrt-calibrate: {exc}", file=sys.stderr)
            return int(exc.exit_code)
    for note in finished.notes:
        print(note)
    return int(ExitCode.SUCCESS) if finished.stored_uri else int(ExitCode.STORAGE_UNAVAILABLE)
