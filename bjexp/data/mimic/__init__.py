"""MIMIC-CXR-JPG ingestion: metadata with its quirks -> patient journeys -> splits -> describers -> image store.

The metadata -> journeys path (metadata, journeys, splits, counts) is pandas/numpy only; torch is never imported.
Entry point: `python -m bjexp.prepare data=mimic paths.mimic_root=...` (builder: bjexp.data.mimic.build).
"""
