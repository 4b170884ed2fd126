"""Write the docs site's home page, ``docs/index.md``, from ``README.md``: the same landing page, with links made
relative to ``docs/`` and without the README's list of docs pages (the site's navigation is that list).

    python scripts/make_docs_index.py          # after editing README.md; tests/test_docs.py checks they agree
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def index_from_readme(readme: str) -> str:
    """``docs/index.md``'s text for the README text ``readme``."""
    start, end = readme.index("**Documentation:**"), readme.index("## Quickstart")
    page = readme[:start] + readme[end:]
    page = page.replace("](docs/images/", "](images/").replace("](docs/", "](")
    return page.replace("[Weights offline](#weights-offline)", "[Weights offline](weights-offline.md)")


def main() -> None:
    (ROOT / "docs" / "index.md").write_text(index_from_readme((ROOT / "README.md").read_text(encoding="utf-8")),
                                            encoding="utf-8")


if __name__ == "__main__":
    main()
