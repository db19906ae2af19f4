"""`edgequant operator`: run the kopf operator. Flags override EDGEQUANT_OPERATOR_* env vars."""

from __future__ import annotations

import argparse
import json
import sys

from edgequant.controller.settings import settings_from_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="namespace to watch (repeatable); default: all (env EDGEQUANT_OPERATOR_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="FAMILY=IMAGE",
        help="quantizer image for a method family: tflite, torch, onnx or tensorrt (env EDGEQUANT_OPERATOR_IMAGES as JSON)",
    )
    parser.add_argument(
        "--max-concurrent-jobs",
        type=int,
        help="cap on running quantizer Jobs, 0 = none (env EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS)",
    )
    parser.add_argument(
        "--peering",
        dest="peering_name",
        help="kopf peering name for leader election between replicas; standalone when omitted (env EDGEQUANT_OPERATOR_PEERING_NAME)",
    )
    parser.add_argument(
        "--liveness-port",
        type=int,
        help="port of /healthz, 0 disables (default 8080; env EDGEQUANT_OPERATOR_LIVENESS_PORT)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port of Prometheus /metrics, 0 disables (default 9090; env EDGEQUANT_OPERATOR_METRICS_PORT)",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "plain", "full"],
        help="log format (default json; env EDGEQUANT_OPERATOR_LOG_FORMAT)",
    )
    parser.add_argument("--print-settings", action="store_true", help="print the effective settings as JSON and exit")


def run(args: argparse.Namespace) -> int:
    images = {}
    for item in args.image:
        family, sep, image = item.partition("=")
        if not sep or not image:
            print(
                f"--image {item!r}: use FAMILY=IMAGE, e.g. --image tflite=registry/quantizer-tflite:1.0",
                file=sys.stderr,
            )
            return 2
        images[family] = image
    try:
        settings = settings_from_env(
            namespaces=args.namespaces,
            max_concurrent_jobs=args.max_concurrent_jobs,
            peering_name=args.peering_name,
            liveness_port=args.liveness_port,
            metrics_port=args.metrics_port,
            log_format=args.log_format,
            **({"images": {**settings_from_env().images, **images}} if images else {}),
        )
    except ValueError as exc:
        print(f"edgequant operator: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.print_settings:
        print(json.dumps(settings.model_dump(), indent=2))
        return 0

    import random

    import kopf

    from edgequant.controller import handlers, sweep_handlers  # registers the handlers

    handlers.register_resync(settings.resync_seconds)
    sweep_handlers.register_resync(settings.resync_seconds)
    handlers.register_kueue(settings.kueue)

    kopf.configure(
        log_format={"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}[
            settings.log_format
        ]
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering_name is None,
        peering_name=settings.peering_name,
        priority=settings.peering_priority if settings.peering_priority is not None else random.randint(1, 2**31),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        memo=kopf.Memo(settings=settings),
    )
    return 0
