"""Load a built dataset with either split protocol."""
from __future__ import annotations

from pathlib import Path

from . import schema

PROTOCOLS = ("stream", "paper")


def load(config: str, protocol: str = "stream", path: str | Path = "fpus23", **kwargs):
    """A DatasetDict of `config` from the build at `path`.

    protocol="stream": the default stream-grouped train/validation/test splits (no stream in two
    splits). protocol="paper": the paper's random per-frame splits, read from the `paper_split`
    column (8:1:1, or 8:2 train/validation for bounds) — leaky, for reproduction only.
    Extra keyword arguments go to `datasets.load_dataset` (e.g. `cache_dir`).
    """
    import datasets

    schema.class_names(config)  # validates the config name
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    path = Path(path)
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"{path}: not a built fpus23 dataset (no README.md); run `fpus23 build --out {path}`")
    stream = datasets.load_dataset(str(path), config, **kwargs)
    if protocol == "stream":
        return stream
    everything = datasets.concatenate_datasets([stream[s] for s in stream])
    column = everything["paper_split"]
    out = {}
    for split in schema.PAPER_RATIOS[config]:
        indices = [i for i, value in enumerate(column) if value == split]
        out[split] = everything.select(indices)
    return datasets.DatasetDict(out)
