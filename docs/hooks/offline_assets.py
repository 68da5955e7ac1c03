"""MkDocs hook: the site renders its diagrams and formulas without a network.

Mermaid and MathJax are served from `docs/javascripts/vendor/` (pinned copies, see
`NOTICE.txt` there), each added only to the pages that use it: a page with a
```` ```mermaid ```` block gets `mermaid.min.js`, a page with `$...$` math (the
`arithmatex` class) gets the MathJax configuration and `tex-svg.js`.

The scripts go in before Material's bundle: Material draws the diagrams with the
global `mermaid` when one is defined, and fetches mermaid from a CDN only when
none is (`tests/test_docs.py` checks the built pages for any remote script).
"""

from __future__ import annotations

import re

from mkdocs.utils import get_relative_url

MERMAID = ["javascripts/vendor/mermaid.min.js"]
MATHJAX = ["javascripts/mathjax.js", "javascripts/vendor/tex-svg.js"]
BUNDLE = re.compile(r'<script src="[^"]*assets/javascripts/bundle\.[0-9a-f]+\.min\.js"')


def scripts_for(html: str) -> list[str]:
    """The vendored scripts a built page needs, as site paths."""
    scripts = []
    if 'class="mermaid"' in html:
        scripts += MERMAID
    if 'class="arithmatex"' in html:
        scripts += MATHJAX
    return scripts


def on_post_page(output, page, config):
    scripts = scripts_for(output)
    if not scripts:
        return output
    tags = "".join(
        f'<script src="{get_relative_url(path, page.url)}"></script>\n' for path in scripts
    )
    match = BUNDLE.search(output)
    if match is None:
        raise ValueError(f"{page.file.src_uri}: no Material bundle script to put {scripts} before")
    return output[: match.start()] + tags + output[match.start() :]
