"""The progress bar of every long job in fpus23 (tqdm, in a notebook or a terminal)."""
from tqdm.auto import tqdm

__all__ = ["tqdm"]
