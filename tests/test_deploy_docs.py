"""docs/: the index links every guide, and every link of the operations docs resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.+)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", ["README.md", "operations.md"])
def test_every_link_resolves(doc: str) -> None:
    source = DOCS / doc
    for target in LINK.findall(source.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        assert linked.exists(), f"{doc} links to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{doc} links to missing section {target}"


def test_the_index_links_every_provider_guide() -> None:
    index = (DOCS / "README.md").read_text()
    linked = {t for t in LINK.findall(index) if t.startswith("providers/")}
    present = {f"providers/{p.name}" for p in (DOCS / "providers").glob("*.md")}
    assert present <= linked
    for provider in ("hubspot", "stripe", "quickbooks", "xero", "zendesk", "s3"):
        assert f"providers/{provider}.md" in linked
