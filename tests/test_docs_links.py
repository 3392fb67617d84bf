"""The documents hold together: every relative link and image in README.md, docs/ and bench/README.md
points to a file (and heading) that exists, and none of them reads as a log of how the project was
built rather than as documentation of what it is (see PROCESS_WORDS)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "bench").rglob("*.md")],
    key=lambda p: str(p),
)

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, …

# Words that describe how the project was worked on, not what it is. Hardware is named instead
# ("on a 2-core x86 CPU", "on one H200 GPU"); pytest's scope="session" is not prose.
PROCESS_WORDS = re.compile(
    r"""
    \bsessions?\b
    | \blent\b | \bborrowed\b
    | \bthe\ issue\b | \bissue's\b | \bissue\ \#?\d
    | \bthis\ (?:machine|round)\b | \b(?:work|next|last|previous)\ rounds?\b
    | \b(?:measured|ran|run|printed|trained|timed|estimated|installed)\ here\b
    | \bon\ this\ (?:\d-core\ )?(?:cpu|gpu|machine)\b
    """,
    re.I | re.X,
)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces → '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) → text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _targets(path: Path) -> list[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return _INLINE_LINK.findall(prose) + _REF_LINK.findall(prose)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_documents_are_found():
    names = {_rel(p) for p in DOCS}
    assert {"README.md", "docs/method.md", "docs/experiments.md", "bench/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_and_images_resolve(doc: Path):
    broken = []
    for target in _targets(doc):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(file_part)).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file {dest}")
        elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    assert not broken, f"{_rel(doc)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_no_words_about_how_the_project_was_built(doc: Path):
    hits = []
    for lineno, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for m in PROCESS_WORDS.finditer(line.replace('scope="session"', "")):
            hits.append(f"{_rel(doc)}:{lineno}: {m.group(0)!r} in {line.strip()[:100]!r}")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Measured here: 8 min on the CPU", True),
        ("trained on a lent H200", True),
        ("stage chosen in session 6", True),
        ("the issue's bar", True),
        ("on this 2-core CPU", True),
        ("on a 2-core x86 CPU, one run beside another", False),
        ("k = round(r·P); tokens where the evidence is; see there", False),
        ('@pytest.fixture(scope="session") and the "stage 6" recipe step', False),
    ],
)
def test_the_deny_list_flags_process_words_only(text: str, flagged: bool):
    assert bool(PROCESS_WORDS.search(text.replace('scope="session"', ""))) is flagged
