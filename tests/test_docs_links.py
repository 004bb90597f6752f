"""The repository's Markdown stands alone: every link and every file it names is in the repository.

A user who clones the project has the repository and nothing else, so a link to
``../shared/DESIGN.md`` (or to a file since moved) is a dead end for them. Links are
resolved against the Markdown file's folder; ``http(s)``/``mailto`` links are allowed;
a ``#fragment`` must name a heading of its target. Paths written as code
(``lib/gridpersona/lake/__init__.py``) must exist too, since a reader follows them by hand.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_ALLOWED_SCHEMES = ("http://", "https://", "mailto:")
# Top-level folders of the repository: a code span starting with one of these names a repository path.
_REPO_FOLDERS = ("lib", "conf", "docs", "tests", "scripts", "jobs", "dags", "notebooks", "bench")
_PATH_SPAN = re.compile(r"^(?:%s)/[A-Za-z0-9_./-]+$" % "|".join(_REPO_FOLDERS))


def markdown_files(root: Path) -> list[Path]:
    """Every Markdown file of the repository: git's tracked and not-ignored files, else a walk without
    virtual environments and build output."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=root,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        files = [root / line for line in out.splitlines() if line]
        if files:
            return sorted(f for f in files if f.is_file())
    except (OSError, subprocess.SubprocessError):
        pass
    skip = {".git", ".venv", ".venv-airflow", "build", "node_modules", "lake"}
    return sorted(p for p in root.rglob("*.md") if not skip & set(p.relative_to(root).parts))


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown text's headings (lower case, punctuation dropped, spaces -> '-',
    a repeated anchor numbered -1, -2, ...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(text):
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"`|\*\*|__", "", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title, flags=re.UNICODE).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_problems(md: Path, root: Path) -> list[str]:
    """What is wrong with ``md``'s links and code-span paths, one line each (empty: nothing)."""
    text = md.read_text(encoding="utf-8")
    rel = md.relative_to(root)
    problems = []
    for n, line in _prose_lines(text):
        bare = _CODE_SPAN.sub("``", line)  # a link shown as code is not a link
        targets = _INLINE_LINK.findall(bare)
        ref = _REF_DEF.match(bare)
        if ref:
            targets.append(ref.group(1))
        for target in targets:
            problem = _target_problem(md, root, target)
            if problem:
                problems.append(f"{rel}:{n}: link {target!r}: {problem}")
        for span in _CODE_SPAN.findall(line):
            path = span.split("::", 1)[0].rstrip(".,;:")
            if _PATH_SPAN.match(path) and not (root / path).exists() and not _ignored(root, path):
                problems.append(f"{rel}:{n}: names {path!r}, which is not in the repository")
    return problems


def _ignored(root: Path, path: str) -> bool:
    """Whether git ignores ``path`` (an output folder such as ``bench/results/``, made by running something)."""
    try:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _target_problem(md: Path, root: Path, target: str) -> str | None:
    if target.startswith(_ALLOWED_SCHEMES):
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
        return "a link outside the repository (only http(s) and mailto links may leave it)"
    path_part, _, fragment = target.partition("#")
    if path_part.startswith("/"):
        return "an absolute path: outside the repository"
    dest = (md.parent / path_part).resolve() if path_part else md.resolve()
    if not dest.is_relative_to(root.resolve()):
        return "outside the repository"
    if not dest.exists():
        return "no such file in the repository"
    if fragment and dest.suffix == ".md" and fragment not in heading_anchors(dest.read_text(encoding="utf-8")):
        return f"{dest.relative_to(root.resolve())} has no heading with the anchor #{fragment}"
    return None


def test_the_checker_catches_links_that_leave_the_repository_or_lead_nowhere(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "lib").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("# Design\n")
    (repo / "docs" / "page.md").write_text("# A page\n\n## Two words\n")
    (repo / "README.md").write_text(
        "# Readme\n"
        "[design](../shared/DESIGN.md) [gone](docs/missing.md) [abs](/etc/passwd) [file](file:///etc/hosts)\n"
        "[bad anchor](docs/page.md#nowhere) [ok](docs/page.md#two-words) [web](https://example.org/x)\n"
        "[self](#readme) `lib/gone.py` `lib/` `conf/<env>.yaml` `[not a link](../x.md)`\n"
        "```\n[in a code block](../shared/DESIGN.md)\n```\n"
        "[ref]: ../shared/DESIGN.md\n")
    problems = link_problems(repo / "README.md", repo)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "link '../shared/DESIGN.md': outside the repository",
        "link 'docs/missing.md': no such file in the repository",
        "link '/etc/passwd': an absolute path: outside the repository",
        "link 'file:///etc/hosts': a link outside the repository (only http(s) and mailto links may leave it)",
        "link 'docs/page.md#nowhere': docs/page.md has no heading with the anchor #nowhere",
        "names 'lib/gone.py', which is not in the repository",
        "link '../shared/DESIGN.md': outside the repository",
    ]


def test_no_markdown_file_links_outside_the_repository_or_to_a_missing_file():
    files = markdown_files(ROOT)
    assert ROOT / "README.md" in files and ROOT / "docs" / "architecture.md" in files
    problems = [p for md in files for p in link_problems(md, ROOT)]
    assert not problems, "Markdown links and paths that lead nowhere for a user of the repository:\n" + "\n".join(problems)
