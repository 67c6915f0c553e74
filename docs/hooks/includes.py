"""MkDocs hook: repository files shown in the site without copies, and the optional pages.

A line ``<!-- include: PATH [shift=N] [lang=LANG] [from="TEXT"] -->`` in a page is replaced by
the file at PATH (relative to the repository's top):

- ``shift=N`` moves every Markdown heading N levels down (``#`` becomes ``##`` for N=1), so
  that a README fits under the page's own title;
- ``lang=LANG`` shows the file as a code block in that language;
- ``from="TEXT"`` keeps only the paragraph that starts at the first line containing TEXT
  (up to the next blank line), e.g. one commented block of a configuration file.

Code fences that a Markdown file indents inside list items are moved to the margin, where
Python-Markdown recognises them.

A missing file or TEXT fails the build. Pages listed in ``OPTIONAL_PAGES`` join the
navigation when the file exists (the nav would otherwise fail the strict build until then);
``<!-- if-page: NAME.md -->...<!-- end-if-page -->`` keeps text only when NAME.md exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

_INCLUDE = re.compile(r"^<!-- include: (?P<spec>.+?) -->$", re.MULTILINE)
_IF_PAGE = re.compile(
    r"<!-- if-page: (?P<page>[\w./-]+) -->(?P<body>.*?)<!-- end-if-page -->", re.DOTALL
)
_HEADING = re.compile(r"^(#{1,6})(?= )", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)")
_INDENTED_FENCE = re.compile(r"^( {1,3})(```|~~~)")

# (navigation section, title, page): added to the section when docs/<page> exists.
OPTIONAL_PAGES = (("Deployment", "Service images and Compose", "deployment.md"),)


def on_config(config: Any, **_: Any) -> Any:
    docs_dir = Path(config["docs_dir"])
    for section, title, page in OPTIONAL_PAGES:
        if not (docs_dir / page).is_file():
            continue
        for entry in config["nav"]:
            if isinstance(entry, dict) and section in entry:
                children = entry[section]
                if not any(isinstance(c, dict) and page in c.values() for c in children):
                    children.append({title: page})
                break
        else:
            raise PluginError(f"mkdocs.yml has no navigation section {section!r} for {page}")
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **_: Any) -> str:
    repository = Path(config["config_file_path"]).resolve().parent
    docs_dir = Path(config["docs_dir"])

    def keep_if_page(match: re.Match[str]) -> str:
        return match["body"] if (docs_dir / match["page"]).is_file() else ""

    markdown = _IF_PAGE.sub(keep_if_page, markdown)

    def include(match: re.Match[str]) -> str:
        try:
            return _render(repository, match["spec"])
        except (OSError, ValueError) as exc:
            raise PluginError(
                f"{page.file.src_uri}: cannot include {match['spec']}: {exc}"
            ) from exc

    return _INCLUDE.sub(include, markdown)


def _render(repository: Path, spec: str) -> str:
    path, *options = shlex.split(spec)
    settings = dict(option.split("=", 1) for option in options)
    unknown = set(settings) - {"shift", "lang", "from"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    source = (repository / path).resolve()
    if repository not in source.parents:
        raise ValueError("only files inside the repository can be included")
    text = source.read_text(encoding="utf-8")
    if "from" in settings:
        text = _paragraph_from(text, settings["from"])
    if "shift" in settings:
        text = _shift_headings(text, int(settings["shift"]))
    if "lang" not in settings:
        text = _outdent_fences(text)
    if "lang" in settings:
        fence = "````" if "```" in text else "```"
        text = f"{fence}{settings['lang']}\n{text.rstrip()}\n{fence}"
    return text.rstrip() + "\n"


def _paragraph_from(text: str, start: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if start in line:
            kept = []
            for following in lines[index:]:
                if not following.strip():
                    break
                kept.append(following)
            return "\n".join(kept)
    raise ValueError(f"no line contains {start!r}")


def _outdent_fences(text: str) -> str:
    """Move code fences indented inside list items (GitHub renders them) to the margin.

    Python-Markdown only sees a fence at the start of a line; indented, the block would show
    as inline code. At the margin it ends the list, but shows as the code block it is.
    """
    out = []
    indent: str | None = None
    for line in text.splitlines():
        match = _INDENTED_FENCE.match(line)
        if indent is None and match:
            indent = match.group(1)
            line = line[len(indent) :]
        elif indent is not None:
            line = line[len(indent) :] if line.startswith(indent) else line.lstrip(" ")
            if _FENCE.match(line):
                indent = None
        out.append(line)
    return "\n".join(out)


def _shift_headings(text: str, levels: int) -> str:
    """Move ATX headings down ``levels`` levels, leaving fenced code blocks alone."""
    out = []
    fence: str | None = None
    for line in text.splitlines():
        marker = _FENCE.match(line.lstrip())
        if marker:
            fence = None if fence == marker.group(1) else (fence or marker.group(1))
        elif fence is None:
            line = _HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + levels), line)
        out.append(line)
    return "\n".join(out)
