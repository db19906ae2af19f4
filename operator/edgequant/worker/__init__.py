"""The quantizer worker: the same pipeline in the pod (``edgequant-worker``) and the CLI (``edgequant run``).

Modules: ``pipeline`` (the stage table and the run), ``stages/`` (one module per stage), ``context``
(RunContext), ``evaluate`` (the one evaluator), ``result`` (the WorkerResult of the termination message),
``runner`` (spec -> run), ``main`` (the pod entry point), ``sandbox`` (the credential-free child).
report.json is ``edgequant.report`` (schema, build, html). Interfaces are documented in docs/worker.md.
"""
