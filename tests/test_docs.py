"""The documentation: the README's size and sections, the LICENSE, every relative Markdown link (and its anchor)
resolves, every documented command-line flag of a tool exists in that tool, and the Python snippets use only names
they define. Pure Python, no model is built."""
import ast
import builtins
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
METHOD_READMES = sorted((REPO / "configs").glob("*/README.md"))
PAGES = [REPO / "README.md", *DOCS, *METHOD_READMES]
# Pages other helpers own: linked from the README, checked only when they exist.
OPTIONAL_PAGES = {"docs/visualization.md", "docs/explorer.md"}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(path: Path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):      # http:, https:, mailto:
            continue
        yield target


def test_readme_is_short_and_has_its_sections():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for section in ("## Installation", "## Quick start", "## Results", "## Tests", "## Citation", "## License"):
        assert section in text, section
    assert "bash tools/install.sh" in text and "@inproceedings{" in text


def test_readme_keeps_the_ci_commands():
    """The README shows exactly the setup and test commands that .ci/run runs."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = [line.split("  #")[0].strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "if ", "export ", "fi"))]
    assert ci == ["bash tools/install.sh", "bash tools/install_explorer_test.sh", ".venv/bin/python -m pytest tests -q",
                  "bash tools/kernel_check.sh"]
    for command in ci + ['.venv/bin/python -m pytest tests -q -m "not slow"']:
        assert command in readme, command


def test_license_is_apache_2():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "Copyright 2026 The fsa-seg Authors" in text and "[yyyy]" not in text


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        shown = rel(dest) if dest.is_relative_to(REPO) else str(dest)
        if not dest.exists():
            if shown not in OPTIONAL_PAGES:
                broken.append(f"{target} (no {shown})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {shown})")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_link_checker_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://example.org)\n")
    assert list(links(page)) == ["missing.md", "#title", "#nowhere"]
    assert anchors(page) == {"title"}
    assert slug("GPU hosts: choosing the torch build") == "gpu-hosts-choosing-the-torch-build"
    assert slug("The GPU check: `tools/gpu_check.py`") == "the-gpu-check-toolsgpu_checkpy"


# --- documented command lines use flags the tools have ------------------------------------------------------
TOOL = re.compile(r"\btools/([\w/]+\.(?:py|sh))\b")
# Launchers that pass their remaining arguments to tools/test.py.
WRAPPERS = {"dist_test.sh", "slurm_test.sh"}


def command_lines(text: str):
    """Every shell command in fenced blocks (continuation lines joined) and in one-line inline code."""
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            yield line.split(" #")[0]
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        yield span


def documented_flags():
    found = {}
    for page in PAGES:
        for line in command_lines(page.read_text(encoding="utf-8")):
            for segment in re.split(r"&&|\|\||[;|]", line):
                match = TOOL.search(segment)
                if match:
                    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", segment[match.end():]):
                        found.setdefault((match.group(1), flag), rel(page))
    return found


def test_documented_flags_exist():
    flags = documented_flags()
    assert ("test.py", "--resume") in flags and ("install.sh", "--cuda") in flags
    missing = []
    for (tool, flag), page in sorted(flags.items()):
        source = REPO / "tools" / tool
        if not source.is_file():
            missing.append(f"{page}: tools/{tool} does not exist")
        elif flag not in source.read_text(encoding="utf-8") + (
                (REPO / "tools" / "test.py").read_text(encoding="utf-8") if tool in WRAPPERS else ""):
            missing.append(f"{page}: tools/{tool} has no {flag}")
    assert not missing, "\n".join(missing)


# --- the Python snippets use only names they define -----------------------------------------------------------
def snippet_names(code: str):
    tree = ast.parse(code)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - defined


def test_python_snippets_define_what_they_use():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    api = (REPO / "docs" / "python_api.md").read_text(encoding="utf-8")
    section = api.split("## In Python", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) >= 2
    snippets += re.findall(r"```python\n(.*?)```", readme.split("## Quick start", 1)[1].split("\n## ", 1)[0], re.S)
    assert len(snippets) >= 3
    for code in snippets:
        assert not snippet_names(code), snippet_names(code)
    assert "init_segmentor(\"configs/fsa_proxy_sam_voc21.py\", options" in section
    assert snippet_names("x = 1\nprint(y)") == {"y"}
