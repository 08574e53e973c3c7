"""MkDocs hook: the Benchmarks page shows the README's generated results, figures included.

``benchmarks/readme_results.py`` writes the measured results into README.md between the markers
``<!-- results:start -->`` and ``<!-- results:end -->``, and their figures into
``benchmarks/results/``. This hook puts that block, unchanged, where a page holds the line
:data:`PLACEHOLDER`, and adds the figures to the site under the same relative paths the README
uses, so the numbers are written in one place and ``mkdocs build --strict`` checks every link of
the block like any page's. A README without the block, or a page placeholder without a README,
fails the build.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

#: The line of a page that the README's results block replaces.
PLACEHOLDER = "<!-- readme-results -->"
START, END = "<!-- results:start -->", "<!-- results:end -->"
#: The figures' folder, relative to the repository root (the README links them from there).
FIGURES = Path("benchmarks") / "results"


def _repo(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def results_block(readme: Path) -> str:
    """The README's generated results, markers included.

    Returns
    -------
    str
        The text from ``<!-- results:start -->`` to ``<!-- results:end -->``.

    Raises
    ------
    PluginError
        When the README cannot be read or lacks either marker.
    """
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginError(f"cannot read {readme}: {exc}") from exc
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise PluginError(
            f"{readme} has no {START} ... {END} block: run python benchmarks/readme_results.py"
        )
    return text[start : end + len(END)]


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add every figure under ``benchmarks/results/`` to the site at the README's paths."""
    repo = _repo(config)
    for path in sorted((repo / FIGURES).rglob("*.png")):
        uri = path.relative_to(repo).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the placeholder line of a page with the README's results block."""
    if PLACEHOLDER not in markdown:
        return markdown
    if page.file.src_uri.count("/"):
        # The block's figure links are relative to the repository root, as the README's are.
        raise PluginError(f"{page.file.src_uri}: {PLACEHOLDER} works only in a top-level page")
    return markdown.replace(PLACEHOLDER, results_block(_repo(config) / "README.md"))
