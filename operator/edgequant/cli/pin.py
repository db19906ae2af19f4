"""`edgequant pin REPORT job.yaml`: write a run's recommendation into the manifest, for review in Git.

The recommendation is what the run found: the published method, the spec values its target or remedy rung chose
(``spec.*`` paths), and the layers it kept in float. ``pin`` writes them into the QuantizationJob manifest with
ruamel.yaml's round trip (comments, key order, quoting and flow lists stay as they are), prints a unified diff,
and with ``--check`` only compares: exit 1 when the manifest differs from the recommendation (for CI).

Sources plug in through ``recommendation_from``: a report.json today; a QuantizationSweep (its status holds a
recommended candidate per target) goes through ``from_sweep`` and needs ``--target`` when it recommends several.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.api.validation import validate_document

#: Exit codes: 0 in sync (or written), 1 differs under --check, 2 bad input.
EXIT_DIFFERS = 1
EXIT_INVALID = 2


class PinError(ValueError):
    """The recommendation or the manifest cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Recommendation:
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    """Spec path (spec.calibration.samples) -> value, as the run chose it."""
    pinned_layers: tuple[str, ...] = ()
    source: str = ""
    """Where it comes from, for the diff header."""


# --------------------------------------------------------------------------- sources


def _typed(value: Any) -> Any:
    """Values reach the report as strings ('1000', 'always'): back to numbers where they are numbers."""
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)


def from_report(report: Mapping[str, Any]) -> Recommendation:
    """A report.json: the published method, the target's and the chosen rung's spec values, the pinned layers."""
    method = report.get("publishedMethod")
    if not method:
        outcome = report.get("outcome") or {}
        raise PinError(
            f"the report published no artifact ({outcome.get('reason', 'no outcome')}: {outcome.get('message', '')}): nothing to pin"
        )
    settings: dict[str, Any] = {}
    for choice in (report.get("target") or {}).get("choices") or []:
        if str(choice.get("field", "")).startswith("spec.") and choice.get("field") != "spec.method":
            settings[choice["field"]] = _typed(choice.get("value"))
    analysis = report.get("analysis") or {}
    chosen = next((t for t in (analysis.get("gate") or {}).get("trials") or [] if t.get("chosen")), None)
    for path, value in ((chosen or {}).get("changes") or {}).items():
        if path != "spec.method":
            settings[path] = _typed(value)
    pinned = (analysis.get("mixedPrecision") or {}).get("pinned") or (chosen or {}).get("pinned") or []
    name = (report.get("job") or {}).get("name") or "report"
    return Recommendation(
        method=str(method), settings=settings, pinned_layers=tuple(pinned), source=f"{name} ({method})"
    )


def from_sweep(status: Mapping[str, Any], target: str | None) -> Recommendation:
    """A QuantizationSweep status: ``recommended`` per target, as a list of candidates with a ``target`` key or a
    mapping target -> candidate; a candidate has ``method``, optional ``options`` (spec path -> value) and
    ``pinnedLayers``."""
    recommended = status.get("recommended") or {}
    if isinstance(recommended, list):
        recommended = {str(c.get("target")): c for c in recommended}
    if not recommended:
        raise PinError("the sweep recommends nothing yet (status.recommended is empty): wait for it to complete")
    if target is None:
        if len(recommended) != 1:
            raise PinError(
                f"the sweep recommends a candidate for each of {', '.join(sorted(recommended))}: choose one with --target"
            )
        target = next(iter(recommended))
    candidate = recommended.get(target)
    if candidate is None:
        raise PinError(f"the sweep has no recommendation for target {target} (it has {', '.join(sorted(recommended))})")
    return Recommendation(
        method=str(candidate["method"]),
        settings={k: _typed(v) for k, v in (candidate.get("options") or {}).items()},
        pinned_layers=tuple(candidate.get("pinnedLayers") or ()),
        source=f"sweep, target {target} ({candidate['method']})",
    )


def recommendation_from(document: Mapping[str, Any], *, target: str | None = None) -> Recommendation:
    """A report.json, a QuantizationSweep object, or a sweep's status."""
    if document.get("kind") == "QuantizationReport":
        return from_report(document)
    if document.get("kind") == "QuantizationSweep":
        return from_sweep(document.get("status") or {}, target)
    if "recommended" in document:
        return from_sweep(document, target)
    raise PinError(
        "not a report.json (kind QuantizationReport) nor a QuantizationSweep: pass the report.json a run wrote"
    )


# --------------------------------------------------------------------------- the manifest


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order, quotes and flow style survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def _job(documents: list[Any]) -> Any:
    jobs = [d for d in documents if isinstance(d, Mapping) and d.get("kind") == api.KIND]
    if len(jobs) != 1:
        raise PinError(
            f"the manifest holds {len(jobs)} QuantizationJob documents; pin works on a file with exactly one"
        )
    return jobs[0]


def _set(node: Any, path: list[str], value: Any) -> None:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    for key in path[:-1]:
        if key not in node or node[key] is None:
            node[key] = CommentedMap()
        node = node[key]
    if isinstance(value, (list, tuple)):
        seq = CommentedSeq(value)
        old = node.get(path[-1])
        if isinstance(old, CommentedSeq) and old.fa.flow_style():
            seq.fa.set_flow_style()
        value = seq
    if node.get(path[-1]) != value:
        node[path[-1]] = value


def _apply(job: Any, rec: Recommendation) -> None:
    spec = job["spec"]
    _set(spec, ["method"], rec.method)
    for dotted, value in rec.settings.items():
        parts = dotted.split(".")
        if parts[0] != "spec" or len(parts) < 2:
            continue
        _set(spec, parts[1:], value)
    mixed = spec.get("mixedPrecision")
    if rec.pinned_layers:
        _set(spec, ["mixedPrecision", "mode"], "manual")
        _set(spec, ["mixedPrecision", "pinnedLayers"], list(rec.pinned_layers))
    elif mixed is not None and mixed.get("mode") == "manual":
        mixed["mode"] = "off"
        mixed.pop("pinnedLayers", None)


def pin_text(text: str, rec: Recommendation) -> str:
    """The manifest text with the recommendation written in (unchanged text when it already matches)."""
    yaml = _yaml()
    documents = list(yaml.load_all(text))
    job = _job(documents)
    if not isinstance(job.get("spec"), Mapping):
        raise PinError("the QuantizationJob has no spec mapping")
    _apply(job, rec)
    out = io.StringIO()
    if len(documents) == 1:
        yaml.dump(documents[0], out)
    else:
        yaml.dump_all(documents, out)
    pinned = out.getvalue()
    _job_doc, problems = validate_document(json.loads(json.dumps(_job(list(_yaml().load_all(pinned))))))
    if problems:
        raise PinError("the pinned manifest would not be valid: " + "; ".join(str(p) for p in problems))
    return pinned


def diff(before: str, after: str, name: str) -> str:
    name = name.lstrip("/")
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{name}", f"b/{name}"))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, help="report.json of a run (or a QuantizationSweep's YAML/JSON with status.recommended)"
    )
    parser.add_argument("manifest", type=Path, help="the QuantizationJob manifest to update in place")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the manifest differs from the recommendation"
    )
    parser.add_argument("--target", help="with a sweep: the target whose recommendation to pin")


def run(args: argparse.Namespace) -> int:
    try:
        source = (
            _yaml().load(args.source.read_text())
            if args.source.suffix in (".yaml", ".yml")
            else json.loads(args.source.read_text())
        )
        rec = recommendation_from(json.loads(json.dumps(source)), target=args.target)
        before = args.manifest.read_text()
        after = pin_text(before, rec)
    except (OSError, ValueError) as exc:
        print(f"edgequant pin: {exc}", file=sys.stderr)
        return EXIT_INVALID
    changes = diff(before, after, str(args.manifest))
    if not changes:
        print(f"{args.manifest}: already pinned to {rec.source}")
        return 0
    sys.stdout.write(changes)
    if args.check:
        print(
            f"{args.manifest} differs from {rec.source}: run `edgequant pin {args.source} {args.manifest}`",
            file=sys.stderr,
        )
        return EXIT_DIFFERS
    args.manifest.write_text(after)
    print(f"{args.manifest}: pinned to {rec.source}", file=sys.stderr)
    return 0
