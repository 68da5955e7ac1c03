// MathJax configuration, read by docs/javascripts/vendor/tex-svg.js (loaded right after it on the
// pages with math: docs/hooks/offline_assets.py). pymdownx.arithmatex (generic mode) wraps
// each formula in \( \) or \[ \] inside an element of class "arithmatex"; only those are typeset.
window.MathJax = {
  tex: {
    inline: [["\\(", "\\)"]],
    display: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
