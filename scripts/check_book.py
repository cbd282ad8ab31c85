"""Check in a real headless browser that a page of the built book renders its maths offline and reads cleanly.

Opens ``<html-dir>/<page>`` from disk in headless Chromium (one browser for all pages, a tab each; network name
resolution blocked, so nothing can come from a CDN), lets MathJax run, and reads the rendered DOM back. The check
fails unless every maths element Sphinx wrote (``span.math`` / ``div.math``) now holds a MathJax 3 ``mjx-container``
with rendered glyphs, no MathJax error box (``mjx-merror``) is present, and no raw TeX delimiter (``\\(``, ``\\[``,
``$$``, ``\\begin{``) is left in the page's visible text outside code. The page checks that follow are stricter:

- no ``$`` and no TeX command (``\\alpha``, ``\\mathrm``...) in the visible text outside code and maths (a line of
  Markdown that broke an inline equation);
- no display equation and no code line wider than its column (the element's scroll width, measured in the
  page at a 1200x900 window by a probe script added to a temporary copy of the page);
- no figure shrunk by more than ``MAX_IMAGE_SHRINK`` (its legends and tick labels become unreadable);
  the book's stylesheet ``book/_static/refimpl.css`` widens the content column (about 900 pixels at this window)
  so that 120-character code lines, the chapters' display equations and the multi-panel figures fit, and printed
  output wraps; ``--no-strict-layout`` prints these three layout problems as warnings instead of failing;
- no standard-error output, warning or traceback text in the cells' outputs;
- no path of the build machine (the repository's folder, a home folder, ``site-packages``) anywhere in the text.

It then saves a screenshot of the page for a person to look at (default ``book/_build/math-check.png``).

Installs Debian's ``chromium`` with apt-get (as root) when ``chromium`` is not on PATH.

Usage::

    python scripts/check_book.py [PAGE ...] [--html-dir book/_build/html] [--screenshot PNG]

PAGE is a page of the built book relative to the HTML folder, with or without ``.html``
(default ``notebooks/01_notation``); the screenshot is of the first page. Exit status 0 with a one-line
summary per page on success, 1 with a message naming the problem otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_HTML_DIR = Path("book/_build/html")
DEFAULT_PAGE = "notebooks/01_notation"
CHROMIUM_TIMEOUT_S = 180

# Flags for a quiet, isolated, offline browser (a fresh user data dir is added), driven over the DevTools protocol.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Resolve no host names: a page that needs a CDN for its maths fails here even on a networked machine.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
)

# Raw TeX left in visible text means MathJax did not typeset it.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
# A lone dollar or a TeX command in prose: an inline equation that Markdown broke (e.g. a line starting with "+").
STRAY_TEX = re.compile(r"\$|\\[A-Za-z]+")
# Warnings and tracebacks printed into an output.
OUTPUT_NOISE = re.compile(r"Traceback \(most recent call last\)|\b[A-Z][A-Za-z]*Warning\b|\bwarnings\.warn")
# Paths of the build machine: its repository folder is added at run time.
MACHINE_PATHS = [r"/home/[^/\s]+/", r"/root/", r"/Users/[^/\s]+/", r"site-packages", r"/tmp/", r"\.venv/"]
# A figure displayed at less than 1 / MAX_IMAGE_SHRINK of its pixel width: at the book's 100 dpi, fontsize-8
# legend text then shows below about 5 pixels.
MAX_IMAGE_SHRINK = 1.8
WINDOW = (1200, 900)  # CSS pixels
LAYOUT_ID = "check-book-layout"
# Measures, after MathJax has typeset the page, every display equation, code block and figure; writes the result
# as JSON into a <pre id=LAYOUT_ID>, whose appearance tells the checker that the page is ready to read.
LAYOUT_PROBE = """<script>
(function () {
  function measure() {
    const out = {wide_math: [], wide_code: [], shrunk_images: []};
    document.querySelectorAll("div.math").forEach(function (el) {
      const c = el.querySelector("mjx-container");
      const inner = c ? c.scrollWidth : el.scrollWidth;
      if (el.scrollWidth > el.clientWidth + 1 || inner > el.clientWidth + 1) {
        out.wide_math.push([el.id || (el.closest("[id]") || {}).id || "?", inner - el.clientWidth,
                            el.textContent.trim().slice(0, 60)]);
      }
    });
    document.querySelectorAll("pre").forEach(function (el) {
      if (el.id === "@ID@" || el.scrollWidth <= el.clientWidth + 1) return;
      const lines = el.textContent.split("\\n");
      const longest = lines.reduce(function (a, b) { return b.length > a.length ? b : a; }, "");
      out.wide_code.push([el.scrollWidth - el.clientWidth, longest.slice(0, 100)]);
    });
    document.querySelectorAll("img").forEach(function (img) {
      if (img.naturalWidth && img.clientWidth && img.naturalWidth / img.clientWidth > @SHRINK@) {
        out.shrunk_images.push([img.naturalWidth, img.clientWidth, (img.closest("[id]") || {}).id || "?"]);
      }
    });
    const pre = document.createElement("pre");
    pre.id = "@ID@";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener("load", function () {
    const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    (mj || Promise.resolve()).then(function () { setTimeout(measure, 200); });
  });
})();
</script>""".replace("@ID@", LAYOUT_ID).replace("@SHRINK@", str(MAX_IMAGE_SHRINK))
# MathJax CHTML draws each character as <mjx-c class="mjx-c<hex code point>">.
MJX_GLYPH = re.compile(r"mjx-c([0-9A-F]+)")
# Text inside these elements is not checked for raw TeX (code may legitimately contain it).
SKIP_TEXT_TAGS = frozenset("script style pre code textarea noscript template math svg".split())
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())


class CheckError(Exception):
    """A failed check, with the message to show."""


@dataclass
class Node:
    """A minimal DOM element: tag name, attributes, children and direct text."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        """The element's CSS classes."""
        return set(self.attrs.get("class", "").split())

    def iter(self) -> list[Node]:
        """This element and all its descendants, in document order."""
        out = [self]
        for child in self.children:
            out.extend(child.iter())
        return out

    def has_descendant(self, tag: str) -> bool:
        """Whether some descendant element has this tag name."""
        return any(node.tag == tag for node in self.iter()[1:])


class _TreeBuilder(HTMLParser):
    """Builds a :class:`Node` tree from serialized HTML (as the page's ``outerHTML`` reads)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(node)
        if tag not in VOID_TAGS:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; ignore a stray end tag.
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].text.append(data)


def parse_html(markup: str) -> Node:
    """Parse HTML into a :class:`Node` tree rooted at a ``#document`` node."""
    builder = _TreeBuilder()
    builder.feed(markup)
    builder.close()
    return builder.root


def visible_text(node: Node) -> str:
    """Text of ``node`` outside code, scripts and MathJax output, one fragment per line."""
    if node.tag in SKIP_TEXT_TAGS or node.tag.startswith("mjx-"):
        return ""
    parts = list(node.text)
    parts.extend(visible_text(child) for child in node.children)
    return "\n".join(part for part in parts if part.strip())


def math_elements(root: Node) -> list[Node]:
    """The elements Sphinx writes for maths (class ``math``: inline ``span``, display ``div``)."""
    return [node for node in root.iter() if node.tag in {"span", "div"} and "math" in node.classes]


def is_rendered(container: Node) -> bool:
    """Whether an ``mjx-container`` holds typeset output (CHTML glyphs or SVG paths)."""
    return container.has_descendant("mjx-c") or container.has_descendant("svg")


def is_red(node: Node) -> bool:
    """Whether MathJax coloured this element red (its ``noundefined`` output for an unknown macro)."""
    style = node.attrs.get("style", "").replace(" ", "").lower()
    return "color:red" in style


def glyph_text(node: Node) -> str:
    """The characters MathJax CHTML drew in ``node`` (decoded from its ``mjx-c<hex>`` classes)."""
    chars = []
    for glyph in node.iter():
        for cls in glyph.classes:
            match = MJX_GLYPH.fullmatch(cls)
            if glyph.tag == "mjx-c" and match:
                chars.append(chr(int(match.group(1), 16)))
    return "".join(chars)


def find_chromium() -> str:
    """Path of ``chromium``; install Debian's package with apt-get (as root) if it is not on PATH."""
    path = shutil.which("chromium")
    if path:
        return path
    if os.name != "posix" or os.geteuid() != 0:
        raise CheckError("chromium is not on PATH: install Debian's chromium package, or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    start = time.perf_counter()
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        print("check_book: chromium not on PATH, running:", " ".join(cmd), flush=True)
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise CheckError(f"'{' '.join(cmd)}' failed")
    print(f"check_book: installed chromium in {time.perf_counter() - start:.0f} s", flush=True)
    path = shutil.which("chromium")
    if not path:
        raise CheckError("apt-get installed chromium but 'chromium' is still not on PATH")
    return path


class Chromium:
    """One headless Chromium for every page, driven over the DevTools protocol (one WebSocket, flat sessions).

    Starting Chromium costs about a second; the pages share one browser and each opens in a new tab."""

    def __init__(self, path: str) -> None:
        import websocket  # websocket-client

        self._profile = tempfile.TemporaryDirectory(prefix="check-book-chromium-")
        self._log = open(Path(self._profile.name) / "chromium.log", "w+")  # closed in close()
        self._proc = subprocess.Popen(
            [path, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # its own process group, so close() can end every helper process
        )
        port_file, deadline = Path(self._profile.name) / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise CheckError(f"chromium did not start its DevTools endpoint:\n{self._log_tail()}")
            time.sleep(0.05)
        port, endpoint = port_file.read_text().split()
        self._ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{endpoint}", timeout=CHROMIUM_TIMEOUT_S, suppress_origin=True
        )
        self._next_id = 0

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-3000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Call a DevTools method and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        self._ws.send(json.dumps(message | ({"sessionId": session} if session else {})))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CheckError(f"chromium: {method} failed: {reply['error']}")
                return reply["result"]

    def rendered_dom(self, url: str, screenshot: Path | None = None) -> str:
        """Open ``url`` in a new tab at the WINDOW size, wait for the layout probe, return the DOM (and save a PNG)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            width, height = WINDOW
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            self.send("Emulation.setDeviceMetricsOverride", metrics, session)
            self.send("Page.navigate", {"url": url}, session)
            ready = f"document.getElementById('{LAYOUT_ID}') !== null"
            deadline = time.monotonic() + CHROMIUM_TIMEOUT_S
            while not self.send("Runtime.evaluate", {"expression": ready, "returnByValue": True}, session)[
                "result"
            ].get("value"):
                if time.monotonic() > deadline:
                    raise CheckError(f"the page did not finish rendering within {CHROMIUM_TIMEOUT_S} s: {url}")
                time.sleep(0.05)
            dom = self.send(
                "Runtime.evaluate", {"expression": "document.documentElement.outerHTML", "returnByValue": True}, session
            )["result"]["value"]
            if screenshot is not None:
                png = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
                screenshot.write_bytes(base64.b64decode(png))
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        return dom

    def close(self) -> None:
        """Close the browser (over the protocol, so it shuts down its helper processes itself), then make sure its
        whole process group is gone before the profile folder is removed: a helper still writing to the profile
        would make the removal fail."""
        if getattr(self, "_ws", None) is not None:
            with contextlib.suppress(Exception):  # the browser may be gone already: the kill below is the fallback
                self.send("Browser.close")
            self._ws.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_dom(page: str, source_html: str, rendered_dom: str, strict_layout: bool = True) -> str:
    """Check the rendered DOM of one page against its built HTML; return a one-line summary."""
    expected = math_elements(parse_html(source_html))
    root = parse_html(rendered_dom)
    if not expected:  # a page of text and tables (the coverage page): only the page checks apply
        problems = page_problems(root, strict_layout)
        if problems:
            raise CheckError(f"{page}: page problems:\n  - " + "\n  - ".join(problems))
        return f"{page}: no maths on this page; no stray TeX, no noise in outputs"
    if not any(node.tag == "body" for node in root.iter()):
        raise CheckError(f"{page}: chromium returned no page body ({len(rendered_dom)} characters)")
    problems: list[str] = []
    containers = [node for node in root.iter() if node.tag == "mjx-container"]
    rendered = [node for node in containers if is_rendered(node)]
    display = [node for node in rendered if node.attrs.get("display") == "true"]
    if len(rendered) < len(containers):
        problems.append(f"{len(containers) - len(rendered)} mjx-container element(s) hold no typeset glyphs")
    untypeset = [node for node in math_elements(root) if not node.has_descendant("mjx-container")]
    if untypeset:
        sample = " | ".join(visible_text(node).strip()[:80] for node in untypeset[:3])
        problems.append(f"{len(untypeset)} of {len(expected)} maths elements not typeset, e.g. {sample}")
    errors = [node for node in root.iter() if node.tag == "mjx-merror"]
    if errors:
        sample = " | ".join(node.attrs.get("data-mjx-error", "?") for node in errors[:3])
        problems.append(f"{len(errors)} MathJax error(s): {sample}")
    undefined = [node for node in root.iter() if node.tag == "mjx-mtext" and is_red(node)]
    if undefined:
        sample = " ".join(glyph_text(node) for node in undefined[:5])
        problems.append(f"{len(undefined)} undefined TeX macro(s) shown in red: {sample}")
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(visible_text(root))})
    if raw:
        problems.append(f"raw TeX delimiters left in the page text: {' '.join(raw)}")
    if not rendered:
        problems.append("no rendered MathJax output (mjx-container) in the DOM: MathJax did not run")
    problems.extend(page_problems(root, strict_layout))
    if problems:
        raise CheckError(f"{page}: maths not rendered:\n  - " + "\n  - ".join(problems))
    return (
        f"{page}: {len(rendered)} equations rendered by MathJax "
        f"({len(display)} display, {len(rendered) - len(display)} inline), no raw TeX, no MathJax errors, "
        "no over-wide maths, no stray TeX, no noise in outputs"
    )


def _sample(items: list[str], n: int = 3) -> str:
    return " | ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def page_problems(root: Node, strict_layout: bool = True) -> list[str]:
    """The stricter page checks on a rendered DOM: stray TeX in prose, over-wide maths and code, shrunk figures,
    noise in outputs and machine paths (see the module docstring). With ``strict_layout`` false, over-wide code
    and shrunk figures are printed as warnings instead of failing the page."""
    problems: list[str] = []
    layout_problems = problems if strict_layout else []
    body = next((node for node in root.iter() if node.tag == "body"), root)
    main = next((node for node in body.iter() if node.tag == "main"), body)
    stray = [line.strip() for line in visible_text(main).splitlines() if STRAY_TEX.search(line)]
    if stray:
        problems.append(f"{len(stray)} text fragment(s) with a $ or a TeX command outside maths: {_sample(stray)}")
    outputs = [node for node in main.iter() if "cell_output" in node.classes]
    stderr = [node for node in main.iter() if "stderr" in node.classes]
    if stderr:
        problems.append(f"{len(stderr)} standard-error output(s): {_sample([all_text(n)[:100] for n in stderr])}")
    noisy = [m.group(0) for node in outputs for m in OUTPUT_NOISE.finditer(all_text(node))]
    if noisy:
        problems.append(f"warning or traceback text in the outputs: {_sample(sorted(set(noisy)))}")
    paths = re.compile("|".join([re.escape(str(Path(__file__).resolve().parent.parent)), *MACHINE_PATHS]))
    found = sorted({m.group(0) for m in paths.finditer(all_text(body))})
    if found:
        problems.append(f"path(s) of the build machine in the page: {_sample(found)}")
    layout = next((node for node in root.iter() if node.attrs.get("id") == LAYOUT_ID), None)
    if layout is None:
        problems.append("the layout probe did not run (no measurement of widths)")
        return problems
    measured = json.loads(all_text(layout))
    if measured["wide_math"]:
        items = [f"{label}: {over}px too wide ({text})" for label, over, text in measured["wide_math"]]
        layout_problems.append(f"{len(items)} display equation(s) wider than the column: {_sample(items)}")
    if measured["wide_code"]:
        items = [f"{over}px: {line!r}" for over, line in measured["wide_code"]]
        layout_problems.append(f"{len(items)} code block(s) with a line wider than the column: {_sample(items)}")
    if measured["shrunk_images"]:
        items = [f"{natural}px shown at {shown}px near #{where}" for natural, shown, where in measured["shrunk_images"]]
        layout_problems.append(
            f"{len(items)} figure(s) shrunk more than {MAX_IMAGE_SHRINK}x (unreadable labels): {_sample(items)}"
        )
    if not strict_layout:
        for problem in layout_problems:
            print(f"check_book: warning: {problem}")
    return problems


def all_text(node: Node) -> str:
    """All text under ``node`` (code and outputs included; scripts and styles left out)."""
    if node.tag in {"script", "style"}:
        return ""
    return "".join([*node.text, *(all_text(child) for child in node.children)])


def probed_copy(path: Path) -> Path:
    """A copy of the page beside it (so its relative links resolve) with the layout probe before ``</body>``."""
    html = path.read_text(encoding="utf-8")
    if "</body>" not in html:
        raise CheckError(f"{path}: no </body> to add the layout probe to")
    copy = path.with_name(path.stem + ".check-layout.html")
    copy.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>", 1), encoding="utf-8")
    return copy


def resolve_page(html_dir: Path, page: str) -> Path:
    """The HTML file of ``page`` (relative to ``html_dir``, ``.html`` optional)."""
    path = html_dir / page
    if path.suffix != ".html":
        path = path.with_name(path.name + ".html")
    if not path.is_file():
        raise CheckError(f"{path} does not exist: build the book first (make book)")
    return path.resolve()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", default=[DEFAULT_PAGE], help=f"default: {DEFAULT_PAGE}")
    parser.add_argument("--html-dir", type=Path, default=DEFAULT_HTML_DIR, help="built HTML folder")
    parser.add_argument(
        "--strict-layout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fail on over-wide display equations and code lines and on shrunk figures (default; "
        "--no-strict-layout warns instead)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        help="PNG of the first page (default <html-dir>/../math-check.png)",
    )
    args = parser.parse_args(argv)
    screenshot: Path = args.screenshot or args.html_dir.parent / "math-check.png"
    try:
        if not args.html_dir.is_dir():
            raise CheckError(f"{args.html_dir} is not a folder: build the book first (make book)")
        paths = [resolve_page(args.html_dir, page) for page in args.pages]
        summaries, failures = [], []
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        with Chromium(find_chromium()) as browser:
            for index, (page, path) in enumerate(zip(args.pages, paths, strict=True)):
                probed = probed_copy(path)
                try:
                    dom = browser.rendered_dom(probed.as_uri(), screenshot if index == 0 else None)
                finally:
                    probed.unlink(missing_ok=True)
                try:
                    summaries.append(check_dom(page, path.read_text(encoding="utf-8"), dom, args.strict_layout))
                except CheckError as err:  # check every page, then fail
                    failures.append(str(err))
        if not screenshot.is_file() or screenshot.stat().st_size == 0:
            raise CheckError(f"chromium wrote no screenshot to {screenshot}")
        if failures:
            raise CheckError(f"{len(failures)} of {len(paths)} page(s) failed:\n" + "\n".join(failures))
    except CheckError as err:
        print(f"check_book: FAIL: {err}", file=sys.stderr)
        return 1
    print(f"check_book: OK {summaries[0]}; screenshot {screenshot}")
    for summary in summaries[1:]:
        print(f"check_book: OK {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
