// Render the math that pymdownx.arithmatex (generic mode) leaves in the page, with the KaTeX
// vendored under assets/katex (no CDN: the site needs no network to build or to view).
// `document$` is Material's page observable, so math also renders after instant navigation.
function renderMath(root) {
  renderMathInElement(root, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMath(body));
} else {
  document.addEventListener("DOMContentLoaded", () => renderMath(document.body));
}
