"""The demo's and the study's chains of tool runs, and the reports built from their outputs.

Library only. A chain is a list of steps, each a `python -m tools.NAME` command run in its own
process and skipped when a rerun finds it complete; the reports read the steps' JSON outputs.
Uses data_pipeline, modeling and evaluation; runs the tools only as processes, never imports
them.
"""
