"""The worker's stages, one module per step of a run, each a plain function of the typed ``RunContext``.

``fetch`` (fetch), ``data`` (validate-data), ``baseline`` (baseline), ``quantize`` (quantize, evaluate),
``analysis`` (sensitivity, select, diagnose), ``target`` (target), ``gate`` (gate), ``upload`` (upload);
``measure`` is the evaluator they share. ``worker/pipeline.py`` holds the table that orders them and the run.
"""
