"""The miniature world's evaluation classifier and segmenter are the same whatever the machine's core count: they
train with threads.INSTRUMENT_THREADS (unpinned, one thread and two end with different weights)."""
from __future__ import annotations

import hashlib

import torch

from conftest import TINY, compose


def _weights(cache) -> list[str]:
    files = sorted([*cache.glob("classifier/*/*.safetensors"), *cache.glob("segmenter/*/*.safetensors")])
    assert len(files) == 2, files
    return [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]


def test_instruments_do_not_depend_on_the_callers_thread_count(tmp_path, cache_dir):
    from bjexp.data.synthetic import build_manifest, world_dir
    from bjexp.eval.segmenter import train_synthetic
    from bjexp.eval.synthetic_classifier import train_classifier

    cfg = compose([*TINY, f"paths.cache_dir={cache_dir}"])
    build_manifest(cfg)
    npz = world_dir(cfg) / "classifier.npz"
    before = torch.get_num_threads()
    built = []
    try:
        for threads, cache in [(1, tmp_path / "one"), (3, tmp_path / "three")]:
            torch.set_num_threads(threads)
            train_classifier(npz, cfg.eval.classifier, cache, seed=0)
            train_synthetic(npz, cache, steps=10, seed=0)
            assert torch.get_num_threads() == threads  # the caller's count is restored
            built.append(_weights(cache))
    finally:
        torch.set_num_threads(before)
    assert built[0] == built[1]
