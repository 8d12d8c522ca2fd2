"""The tiny BiomedCLIP-style encoder's WordPiece vocabulary is the same in every process: built from the corpus,
not learnt (the tokenizers trainer breaks ties in hash order; its vocabularies differed from process to process,
and with them the encoder and generator of a run from an empty cache)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CORPUS = ["New mild left pleural effusion.", "Cardiomegaly, unchanged.", "Resolved right-sided pneumothorax.",
          "Worsening moderate edema; consolidation in the left lung is unchanged."]

BUILD = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
from bjexp.models.tiny_encoders import _write_bert_files
enc = OmegaConf.create({"max_length": 32, "tiny": {"width": 16, "layers": 1, "heads": 2}})
_write_bert_files(Path(sys.argv[1]), %r, enc)
""" % (CORPUS,)


def _build(folder) -> str:
    folder.mkdir()
    subprocess.run([sys.executable, "-c", BUILD, str(folder)], cwd=REPO, check=True, capture_output=True, timeout=300)
    return (folder / "vocab.txt").read_text()


def test_the_vocabulary_is_the_same_in_every_process_and_keeps_words_whole(tmp_path):
    from transformers import BertTokenizerFast

    vocabs = [_build(tmp_path / f"p{i}") for i in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    tokens = vocabs[0].split("\n")
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] = 0: padding is masked by id
    tok = BertTokenizerFast.from_pretrained(tmp_path / "p0")
    assert tok.tokenize(CORPUS[2]) == ["resolved", "right", "-", "sided", "pneumothorax", "."]
    # a word the corpus never had is spelled out in its characters, not lost to [UNK]
    assert tok.tokenize("pleura") == ["p", "##l", "##e", "##u", "##r", "##a"]
