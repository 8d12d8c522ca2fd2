"""One registry of real weights (SD1.5, InstructPix2Pix, RoentGen, BiomedCLIP, torchxrayvision, Inception).

`table.py` is the table (name -> sources at a pinned commit or URL -> required files -> checks) and the runs
each asset enables; `require(name, ...)` is what every loader calls before reading weights: it raises
`MissingWeightsError` (the path to fill, the fetch command) or `ChecksumError` (a file that is not the one
fetched), and accepts a user's own folder (`folder=`). `python -m bjexp.assets` lists, verifies, fetches.
"""
from bjexp.assets.checksums import read_record, record_checksums, sha256
from bjexp.assets.download import fetch
from bjexp.assets.local import check_folder, checksum_failures, get, members, registry, require, unverifiable
from bjexp.assets.spec import (Asset, ChecksumError, FetchError, HubSource, MissingWeightsError, Problem, Run,
                               UnknownAssetError, UrlFile, default_assets_dir)
from bjexp.assets.table import ASSETS, RUNS

__all__ = ["ASSETS", "RUNS", "Asset", "ChecksumError", "FetchError", "HubSource", "MissingWeightsError", "Problem",
           "Run", "UnknownAssetError", "UrlFile", "check_folder", "checksum_failures", "default_assets_dir", "fetch",
           "get", "members", "read_record", "record_checksums", "registry", "require", "sha256", "unverifiable"]
