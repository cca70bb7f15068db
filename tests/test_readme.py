"""The README's two set-up commands are exactly the ones CI runs."""

from __future__ import annotations

import re

from .conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", text)


def test_readme_has_two_setup_commands_that_ci_runs() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"README command not run verbatim by .ci/run: {command}"
    assert any(c.endswith("dvc repro") for c in commands)
    assert any(c.endswith("python -m pytest") for c in commands)


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _dangling_links(path) -> list[str]:
    bad = []
    for target in _LINK.findall(_FENCE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    return bad


def test_slug_matches_githubs_anchors() -> None:
    assert _slug("The first paper's Tables 1 and 2 on all of UTKFace") == (
        "the-first-papers-tables-1-and-2-on-all-of-utkface"
    )
    assert _slug("Attentional CNN + ResNet18 ensemble on UTKFace (the second paper), 3 seeds") == (
        "attentional-cnn--resnet18-ensemble-on-utkface-the-second-paper-3-seeds"
    )


def test_readme_and_docs_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "results").rglob("*.md"))]
    bad = [b for page in pages for b in _dangling_links(page)]
    assert not bad, "links to missing files or headings:\n" + "\n".join(bad)
