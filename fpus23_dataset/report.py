"""What a read or a build found wrong, with file, frame and reason, and every count."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable

# code -> (severity, what happens to the frame or annotation)
CODES: dict[str, tuple[str, str]] = {
    "untrusted_xml": ("error", "file refused: DTD / entity declarations are not allowed; its stream is omitted"),
    "malformed_xml": ("error", "file unreadable (not well-formed XML, truncated, or unreadable): its stream is omitted"),
    "not_cvat_xml": ("error", "file refused: not a CVAT for images 1.1 export; its stream is omitted"),
    "unsafe_image_name": ("error", "frame dropped: image name is absolute or leaves its folder"),
    "missing_image": ("error", "frame dropped from every config: image file not found"),
    "corrupt_image": ("error", "frame dropped from every config: image file cannot be decoded or is truncated"),
    "conflicting_tag": ("error", "frame dropped from that config: the same tag has different values"),
    "unknown_label": ("warning", "annotation ignored: label not in the FPUS23 schema"),
    "unknown_value": ("warning", "tag ignored: attribute value not in the FPUS23 schema"),
    "missing_attribute": ("warning", "tag ignored: it has no value attribute"),
    "degenerate_box": ("warning", "box dropped: zero or negative width/height"),
    "box_outside": ("warning", "box dropped: wholly outside the image"),
    "box_clipped": ("warning", "box clipped to the image"),
    "size_mismatch": ("warning", "image size differs from the XML; the image file's size is used"),
    "duplicate_tag": ("info", "identical tag repeated: counted once"),
    "duplicate_box": ("info", "identical box repeated: counted once"),
    "duplicate_image": ("info", "same frame listed twice in one export: entries merged"),
    "unannotated_image": ("info", "image file with no annotation entry: not in any config"),
    "unlabelled_frame": ("info", "frame with no usable tag or box: not in any config"),
}

MAX_DETAILS_PER_CODE = 2000  # counts are always complete; details are capped to bound memory


@dataclass
class Issue:
    code: str
    file: str
    frame: str | None
    message: str


@dataclass
class Report:
    """Counts of every problem found, details up to a cap, and frames excluded per config."""

    counts: Counter = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    excluded: dict[str, Counter] = field(default_factory=dict)  # config -> reason -> frames
    totals: Counter = field(default_factory=Counter)  # files read, frames, boxes ...
    omitted: dict[str, str] = field(default_factory=dict)  # stream -> why it contributes nothing

    def omit(self, stream: str, reason: str) -> None:
        self.omitted.setdefault(stream, reason)

    def add(self, code: str, file: object, frame: str | None, message: str) -> None:
        if code not in CODES:
            raise KeyError(f"unknown report code {code!r}")
        self.counts[code] += 1
        if self.counts[code] <= MAX_DETAILS_PER_CODE:
            self.issues.append(Issue(code, str(file), frame, message))

    def merge(self, other: "Report") -> None:
        """Add what `other` found, as if it had been added here in the same order (same details kept)."""
        seen: Counter = Counter()
        for issue in other.issues:
            seen[issue.code] += 1
            if self.counts[issue.code] + seen[issue.code] <= MAX_DETAILS_PER_CODE:
                self.issues.append(issue)
        self.counts.update(other.counts)
        for config, reasons in other.excluded.items():
            self.excluded.setdefault(config, Counter()).update(reasons)
        self.totals.update(other.totals)
        for stream, reason in other.omitted.items():
            self.omit(stream, reason)

    def exclude(self, configs: Iterable[str], reason: str) -> None:
        for config in configs:
            self.excluded.setdefault(config, Counter())[reason] += 1

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.counts.items() if CODES[code][0] == "error")

    def to_dict(self) -> dict:
        return {
            "totals": dict(sorted(self.totals.items())),
            "counts": {
                code: {"count": n, "severity": CODES[code][0], "effect": CODES[code][1]}
                for code, n in sorted(self.counts.items())
            },
            "excluded": {c: dict(sorted(r.items())) for c, r in sorted(self.excluded.items())},
            "omitted_streams": dict(sorted(self.omitted.items())),
            "issues": [asdict(i) for i in sorted(self.issues, key=_issue_key)],
        }

    def format_text(self, max_lines_per_code: int = 5) -> str:
        lines = ["totals: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.totals.items()))]
        if not self.counts:
            lines.append("no problems found")
        for code, n in sorted(self.counts.items(), key=lambda kv: (_SEVERITY_ORDER[CODES[kv[0]][0]], kv[0])):
            severity, effect = CODES[code]
            lines.append(f"{severity:7s} {code}: {n:,} — {effect}")
            shown = [i for i in self.issues if i.code == code][:max_lines_per_code]
            for issue in sorted(shown, key=_issue_key):
                where = f"{issue.file}" + (f" [{issue.frame}]" if issue.frame else "")
                lines.append(f"          {where}: {issue.message}")
            if n > len(shown):
                lines.append(f"          ... and {n - len(shown):,} more (see --json)")
        for config, reasons in sorted(self.excluded.items()):
            parts = ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items()))
            lines.append(f"excluded from {config}: {parts}")
        for stream, reason in sorted(self.omitted.items()):
            lines.append(f"stream omitted whole: {stream} ({reason})")
        return "\n".join(lines)


_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _issue_key(issue: Issue) -> tuple:
    return (issue.code, issue.file, issue.frame or "", issue.message)
