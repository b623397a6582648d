"""What changed between two builds: frames added, removed and relabelled, per config."""
from __future__ import annotations

from pathlib import Path

from .. import schema
from .tables import read_labels


def _target(record: dict, config: str):
    if config == "bounds":
        return sorted((o["category"], tuple(round(v, 2) for v in o["bbox"])) for o in record["objects"])
    return record["label"]


def diff_builds(old: Path | str, new: Path | str) -> dict[str, dict[str, list]]:
    """config -> {"added": [image_id], "removed": [image_id], "relabelled": [(image_id, old, new)], "moved": [...]}."""
    out = {}
    for config in schema.CONFIGS:
        a, b = read_labels(old, config), read_labels(new, config)
        relabelled, moved = [], []
        for image_id in sorted(a.keys() & b.keys()):
            before, after = _target(a[image_id], config), _target(b[image_id], config)
            if before != after:
                relabelled.append((image_id, before, after))
            if a[image_id]["split"] != b[image_id]["split"]:
                moved.append((image_id, a[image_id]["split"], b[image_id]["split"]))
        out[config] = {
            "added": sorted(b.keys() - a.keys()),
            "removed": sorted(a.keys() - b.keys()),
            "relabelled": relabelled,
            "moved": moved,
        }
    return out


def format_diff(diff: dict[str, dict[str, list]], limit: int = 10) -> str:
    lines = []
    for config, changes in diff.items():
        summary = ", ".join(f"{len(v):,} {k}" for k, v in changes.items())
        lines.append(f"{config}: {summary}")
        for kind in ("added", "removed"):
            for image_id in changes[kind][:limit]:
                lines.append(f"  {'+' if kind == 'added' else '-'} {image_id}")
        for image_id, before, after in changes["relabelled"][:limit]:
            if config == "bounds":
                lines.append(f"  ~ {image_id}: {len(before)} boxes -> {len(after)} boxes" if len(before) != len(after) else f"  ~ {image_id}: boxes changed")
            else:
                lines.append(f"  ~ {image_id}: {before} -> {after}")
        for image_id, before, after in changes["moved"][:limit]:
            lines.append(f"  > {image_id}: {before} -> {after}")
    return "\n".join(lines)
