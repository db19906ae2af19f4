"""The human-readable report: report.json rendered as one self-contained HTML page (inline CSS and SVG)."""
