"""Stage ``upload``: the artifact and its side files below spec.output.uri (report.json follows in any case)."""

from __future__ import annotations

from edgequant.worker.context import RunContext


def upload_artifact(ctx: RunContext) -> None:
    """Upload the artifact and its extra files, each recorded with its sha256."""
    assert ctx.artifact is not None
    for path in [ctx.artifact.path, *ctx.artifact.extra_files]:
        uploaded = ctx.stores.upload(path, ctx.output_uri(path.name), content_type="application/octet-stream")
        ctx.uploads["artifact" if path == ctx.artifact.path else path.name] = uploaded
        ctx.log(f"uploaded {uploaded.uri} (sha256 {uploaded.sha256[:12]}…)")
