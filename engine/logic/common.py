"""What several pure modules (and the learners in models/) share, defined once. Pure.

- `category_ancestors`: a category path and its ancestors, the one reading of a path that the
  affinity model, the reco learners, the stream's trending tables and the recipes' boosters use.
- `Problem`: one validation problem located by file and 1-based line (and, where it helps, the
  field), printed `file:line: message` (or `file:line: field: message`): what
  `kairos check-config`, the config hub and the event-log loaders report.
"""

from __future__ import annotations

from dataclasses import dataclass


def category_ancestors(path: str) -> list[str]:
    """`"a/b/c"` -> `["a", "a/b", "a/b/c"]` (the root first; empty segments and surrounding
    slashes are ignored, so `"/a//b/"` -> `["a", "a/b"]`)."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem, located by file and 1-based line."""

    file: str
    line: int
    message: str
    field: str | None = None  # the offending field's path, when the format names fields

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}:{self.line}: {self.field or '(top)'}: {self.message}"
