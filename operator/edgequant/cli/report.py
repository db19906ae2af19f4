"""`edgequant report PATH`: render a report.json as a self-contained report.html and optionally open it."""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from pathlib import Path
from urllib.parse import unquote, urlparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        help="report.json, the folder holding it (a local copy of output.uri), a file:// URI, or a report.html to open",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="where to write the HTML (default: report.html beside report.json)"
    )
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    from edgequant.report.html import render_html

    try:
        source = _resolve(args.path)
    except ValueError as exc:
        print(f"edgequant report: {exc}", file=sys.stderr)
        return 2
    if source.suffix == ".html":
        target = source
    else:
        try:
            report = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            print(
                f"edgequant report: {source} is not valid JSON ({exc}); pass the report.json the worker wrote",
                file=sys.stderr,
            )
            return 2
        if not isinstance(report, dict):
            print(
                f"edgequant report: {source} holds a JSON {type(report).__name__}, not a report object", file=sys.stderr
            )
            return 2
        target = args.output or source.with_name("report.html")
        target.write_text(render_html(report), encoding="utf-8")
    print(str(target))
    if args.open:
        webbrowser.open(target.resolve().as_uri())
    return 0


def _resolve(raw: str) -> Path:
    if raw.startswith("s3://"):
        raise ValueError(f"{raw}: download it first (e.g. `aws s3 cp {raw} .`), then pass the local file")
    path = Path(unquote(urlparse(raw).path)) if raw.startswith("file://") else Path(raw)
    if path.is_dir():
        for name in ("report.json", "report.html"):
            if (path / name).is_file():
                return path / name
        raise ValueError(f"{path}: no report.json in this folder; pass the file the worker wrote")
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass report.json (or the folder holding it)")
    return path
