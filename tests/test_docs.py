"""The documentation's relative links lead somewhere: every linked file exists, and every `#anchor` names a heading
of the linked Markdown file (GitHub's heading ids), so a renamed heading cannot leave a dead link behind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "models").glob("*/*.md"),
               *(ROOT / "plugins").rglob("*.md")])
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_id(text: str) -> str:
    """GitHub's id for a heading: lower case, punctuation but '-' and '_' dropped, each space a '-'."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    for m in re.finditer(r"^#{1,6} (.+)$", _FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        base = heading_id(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def test_heading_ids_follow_github():
    assert heading_id("Where issue #3's targets stand (summary, 2026-12-07)") == \
        "where-issue-3s-targets-stand-summary-2026-12-07"
    assert heading_id("`train --seeds N`: several seeds") == "train---seeds-n-several-seeds"


def test_repeated_headings_get_numbered_ids(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n```\n# not a heading\n```\n## Notes\n### Other\n", encoding="utf-8")
    assert anchors(page) == {"notes", "notes-1", "other"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    dead = []
    for target in _LINK.findall(_FENCE.sub("", doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked here
            continue
        path, _, fragment = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            dead.append(f"{target}: no such heading")
    assert not dead, dead
