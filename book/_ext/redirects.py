"""Redirect pages for renamed chapters: ``redirects = {old docname: new docname}`` in the book's Sphinx config.

The chapter files were renamed to follow the book's order (issue 19); their old URLs keep working. After an HTML
build this writes ``<old>.html`` for each pair: a page that sends the browser on to ``<new>.html`` at once, keeping
the ``#fragment`` (section anchors do not change with the file name), with a meta refresh for browsers without
JavaScript and a canonical link. Nothing is fetched. A redirect whose old name is still a page of the book, or whose
target is not one, fails the build.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from sphinx.application import Sphinx

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Moved: {new}</title>
<link rel="canonical" href="{target}">
<meta http-equiv="refresh" content="0; url={target}">
<script>location.replace({target_js} + location.hash);</script>
</head><body><p>This page has moved to <a href="{target}">{target}</a>.</p></body></html>
"""


def write_redirects(app: Sphinx, exception: Exception | None) -> None:
    """Write one redirect page per entry of ``app.config.redirects`` (HTML builds that succeeded only)."""
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    for old, new in app.config.redirects.items():
        if old in app.env.found_docs:
            raise ValueError(f"redirects: {old!r} is still a page of the book; a redirect would overwrite it")
        if new not in app.env.found_docs:
            raise ValueError(f"redirects: the target {new!r} of {old!r} is not a page of the book")
        page = outdir / f"{old}.html"
        target = os.path.relpath(outdir / f"{new}.html", page.parent).replace(os.sep, "/")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(PAGE.format(new=html.escape(new), target=html.escape(target), target_js=repr(target)))


def setup(app: Sphinx) -> dict:
    app.add_config_value("redirects", {}, "html")
    app.connect("build-finished", write_redirects)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
