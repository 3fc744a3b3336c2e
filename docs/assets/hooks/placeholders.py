"""MkDocs hook: a nav page whose Markdown file is not written yet gets a generated stub.

Several pages (docs/spec.md, docs/trainer.md, ...) are written by different people at different
times; the site must build with ``--strict`` at every commit. A missing page becomes a short
"not written yet" page in the built site only: nothing is written into docs/, so a real page is
never overwritten. The build log lists the stubs (INFO, so ``--strict`` still passes).
"""

from __future__ import annotations

import logging
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.placeholders")


def _nav_pages(nav: Any) -> list[str]:
    """Every Markdown path named in the nav (nested sections included)."""
    out: list[str] = []
    items = nav if isinstance(nav, list) else [nav]
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(_nav_pages(value))
    return [p for p in out if p.endswith(".md")]


def on_files(files: Files, config: Any) -> Files:
    for path in _nav_pages(config["nav"] or []):
        if files.get_file_from_path(path) is None:
            title = path.removesuffix(".md").replace("_", " ").capitalize()
            content = f"# {title}\n\nThis page is not written yet.\n"
            files.append(File.generated(config, path, content=content))
            log.info("placeholder page generated for missing %s", path)
    return files
