"""The landing page and the docs site: a short README whose links lead somewhere, the test command CI runs, and an
API reference that lists every name ``import fcn_app`` offers, at the module that defines it.

``mkdocs build --strict`` (run by ``.ci/run``) checks the site's own links and anchors and that every ``:::``
entry still exists; these tests check what mkdocs does not read: the README, and that nothing public is missing.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import fcn_app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_a_landing_page_of_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the details to docs/"


def _headings(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code fences)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.*)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_relative_link_of_the_readme_leads_to_a_file_or_heading():
    text = README.read_text(encoding="utf-8")
    targets = [target for target in LINK.findall(text) if not target.startswith(("http://", "https://"))]
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        else:
            assert anchor in _headings(text), f"README links to #{anchor}, which is no heading of it"


def test_the_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && python -m pytest -q" in readme
    assert "python -m pytest -q" in ci and "mkdocs build --strict" in ci


def test_the_api_reference_lists_every_public_name_where_it_is_defined():
    documented = set(re.findall(r"^::: ([\w.]+)", (DOCS / "api.md").read_text(encoding="utf-8"), re.MULTILINE))
    missing = []
    for name in fcn_app.__all__:
        value = getattr(fcn_app, name)
        module = getattr(value, "__module__", None) if not isinstance(value, str) else None
        if module is None or not module.startswith("fcn_app"):
            continue  # __version__
        if module == "fcn_app.errors" and "fcn_app.errors" in documented:
            continue  # the errors module is documented whole
        if f"{module}.{name}" not in documented:
            missing.append(f"{module}.{name}")
    assert not missing, f"docs/api.md lacks: {', '.join(missing)}"
    for entry in documented:  # and nothing documented is stale (mkdocs --strict says so too, but later)
        module, _, attribute = entry.rpartition(".")
        try:
            importlib.import_module(entry)
        except ImportError:
            assert hasattr(importlib.import_module(module), attribute), f"docs/api.md names {entry}: gone"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(path.name for path in DOCS.glob("*.md"))
    assert pages and all(f": {page}" in nav for page in pages), [page for page in pages if f": {page}" not in nav]


def test_the_site_home_page_is_the_readme():
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_docs_index import index_from_readme

    assert (DOCS / "index.md").read_text(encoding="utf-8") == index_from_readme(README.read_text(encoding="utf-8")), \
        "docs/index.md differs from README.md: run python scripts/make_docs_index.py"


def test_the_readme_tells_a_cpu_only_user_how_to_get_the_cpu_build():
    """Issue 25, item 11: pip's default torch wheels for Linux bring the CUDA libraries (a 5.7 GB virtualenv on a
    CPU-only machine); PyTorch's own CPU wheel index is the documented way around it, before the app's install."""
    readme = README.read_text(encoding="utf-8")
    cpu_line = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu_line in readme
    assert readme.index(cpu_line) < readme.index("pip install -e .\n")  # torch first, so pip keeps that build
