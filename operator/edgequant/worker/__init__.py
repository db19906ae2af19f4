"""The quantizer worker: the same pipeline in the pod (``edgequant-worker``) and the CLI (``edgequant run``).

Modules: ``pipeline`` (stages and the run), ``context`` (RunContext),
``evaluate`` (the one evaluator), ``report`` (report.json and the
WorkerResult), ``runner`` (spec -> run), ``main`` (the pod entry point).
Interfaces are documented in docs/worker.md.
"""
