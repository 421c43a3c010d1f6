"""Rendering executed notebooks to self-contained HTML, and the run's index page."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from helpers.core.display import TABLE_CSS, format_value
from helpers.core.io import atomic_write_text


# Anything that would make the browser fetch from the network when the report is opened.
_REMOTE = [
    re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"'](?:https?:)?//[^>]*>\s*</script>", re.I),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"'](?:https?:)?//[^>]*>", re.I),
    re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']\s*[\"'][^>]*>\s*</script>", re.I),  # empty MathJax src
    # inline scripts that import from a CDN (nbconvert's mermaid loader)
    re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?(?:https?:)?//cdn(?:(?!</script>).)*?</script>", re.I | re.S),
    re.compile(r"@import\s+url\([\"']?(?:https?:)?//[^)]*\)\s*;?", re.I),
]


_HEADING = re.compile(r"<h([1-3])\b[^>]*\bid=\"([^\"]+)\"[^>]*>(.*?)</h\1>", re.S | re.I)


_TAGS = re.compile(r"<[^>]+>")


CARD_CSS = """
<style>
.wb-card{font-family:system-ui,-apple-system,Segoe UI,sans-serif;border:1px solid #d0d7de;border-radius:8px;
 padding:12px 16px;margin:16px auto;max-width:1100px;background:#f6f8fa}
.wb-card h2{margin:0 0 8px 0;font-size:1.15em}.wb-card table{border-collapse:collapse;font-size:.9em}
.wb-card td,.wb-card th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.wb-card .ok{color:#1a7f37;font-weight:600}.wb-card .failed{color:#cf222e;font-weight:600}
.wb-card .warn{color:#9a6700;font-weight:600}
.wb-toc{font-family:system-ui,sans-serif;max-width:1100px;margin:0 auto 12px auto;font-size:.9em}
.wb-toc ul{margin:4px 0 4px 18px;padding:0}.wb-toc li.l3{margin-left:16px}
details.wb-params summary{cursor:pointer}
details.wb-logs{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto}
details.wb-logs summary{cursor:pointer;font-weight:600}
details.wb-logs pre{max-height:24em;overflow:auto;background:#f6f8fa;padding:8px;font-size:.8em}
/* Outputs never widen the page: what is wider than the column scrolls inside its own box. */
.jp-OutputArea-output{max-width:100%;overflow-x:auto}
.jp-RenderedHTMLCommon table{table-layout:auto}
.jp-RenderedImage img{max-width:100%;height:auto}
.jp-RenderedText pre{white-space:pre-wrap;overflow-wrap:anywhere}
""" + TABLE_CSS + """</style>
"""


def strip_remote(text: str) -> str:
    for pat in _REMOTE:
        text = pat.sub("", text)
    return text


def _fmt(v: Any) -> str:
    """A card or index value: the report tables' formatter (missing values said in words), escaped."""
    return html.escape(format_value(v))


def card_html(facts: dict[str, Any], metrics: dict[str, Any], params: dict[str, Any], n_metrics: int = 12) -> str:
    """The header card: the run's key facts, headline metrics, and the parameters (collapsed)."""
    status = facts.get("status", "")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td{' class=' + repr(str(v)) if k == 'status' else ''}>"
                   f"{_fmt(v)}</td></tr>" for k, v in facts.items() if v not in (None, ""))
    mrows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
                    for k, v in list(metrics.items())[:n_metrics])
    prows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in params.items())
    more = f" (first {n_metrics} of {len(metrics)}; all in metrics.json)" if len(metrics) > n_metrics else ""
    return (f'{CARD_CSS}<div class="wb-card"><h2>{html.escape(str(facts.get("notebook", "")))} '
            f'<span class="{html.escape(status)}">{html.escape(status)}</span></h2>'
            f'<div style="display:flex;gap:32px;flex-wrap:wrap"><table>{rows}</table>'
            + (f"<table><tr><th colspan=2>headline metrics{more}</th></tr>{mrows}</table>" if mrows else "")
            + f'</div><details class="wb-params"><summary>parameters</summary><table>{prows}</table></details></div>')


def toc_html(body: str) -> str:
    items = []
    for level, anchor, inner in _HEADING.findall(body):
        text = html.unescape(_TAGS.sub("", inner)).replace("¶", "").strip()
        if text:
            items.append(f'<li class="l{level}"><a href="#{anchor}">{html.escape(text)}</a></li>')
    if not items:
        return ""
    return f'<nav class="wb-toc"><details open><summary><b>Contents</b></summary><ul>{"".join(items)}</ul></details></nav>'


def answer_first(cells: list) -> list:
    """The cell tagged ``answer`` (it computes and shows the notebook's answer at the end of the
    notebook) moves to just after the opening cell with the question, so the report opens with it."""
    tagged = [i for i, c in enumerate(cells) if "answer" in c.get("metadata", {}).get("tags", [])]
    if not tagged or not cells:
        return cells
    answer = cells[tagged[0]]
    rest = [c for i, c in enumerate(cells) if i != tagged[0]]
    return rest[:1] + [answer] + rest[1:]


def read_answer(folder: Path) -> dict[str, Any]:
    """``answer.json`` of a notebook's output folder ({} when it has none)."""
    try:
        answer = json.loads((Path(folder) / "answer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


def render_notebook_html(ipynb: Path, html_path: Path, facts: dict[str, Any], metrics: dict[str, Any],
                         params: dict[str, Any]) -> Path:
    """Executed notebook -> self-contained HTML: code hidden, figures embedded, card and contents on top."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    nb.cells = answer_first(nb.cells)
    # The parameter cells are replaced by the card's parameter table.
    nb.cells = [c for c in nb.cells
                if not {"parameters", "injected-parameters"} & set(c.get("metadata", {}).get("tags", []))]
    # Code is hidden; a failing cell's source is shown as a block above its traceback.
    cells = []
    for c in nb.cells:
        if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            cells.append(nbformat.v4.new_markdown_cell(f"**The cell that failed:**\n\n```python\n{c.source}\n```"))
        cells.append(c)
    nb.cells = cells
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nb)
    body = strip_remote(body)
    title = facts.get("notebook", ipynb.stem)
    body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(str(title))}</title>", body, count=1, flags=re.S)
    headline = read_answer(ipynb.parent).get("headline") or metrics
    insert = card_html(facts, headline, params) + toc_html(body)
    m = re.search(r"<main[^>]*>", body) or re.search(r"<body[^>]*>", body)
    body = body[:m.end()] + insert + body[m.end():] if m else insert + body
    logs = training_logs_html(ipynb.parent)
    end = body.rfind("</main>") if "</main>" in body else body.rfind("</body>")
    body = body[:end] + logs + body[end:] if end >= 0 else body + logs
    return atomic_write_text(html_path, body)


def training_logs_html(folder: Path, max_lines: int = 400) -> str:
    """One collapsed block at the end of the report with every ``train.log`` under ``folder`` (the
    per-epoch lines the training loop writes there instead of into a cell), each linked by its relative
    path; "" when there is none. A long log shows its last ``max_lines`` lines."""
    folder = Path(folder)
    parts = []
    for log in sorted(folder.rglob("train.log")):
        rel = log.relative_to(folder).as_posix()
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        cut = f" (last {max_lines} of {len(lines)} lines)" if len(lines) > max_lines else ""
        parts.append(f'<p><a href="{html.escape(rel)}">{html.escape(rel)}</a>{cut}</p>'
                     f'<pre>{html.escape(chr(10).join(lines[-max_lines:]))}</pre>')
    if not parts:
        return ""
    return (f'<details class="wb-logs"><summary>Training logs ({len(parts)} run'
            f'{"s" if len(parts) != 1 else ""}, per epoch)</summary>{"".join(parts)}</details>')


def _answer_cell(answer: dict[str, Any], metrics: dict[str, Any], n_metrics: int) -> str:
    """The notebook's answer sentence and its chosen headline numbers (else its first metrics)."""
    if answer.get("answer"):
        shown = "".join(f"<li>{html.escape(k)}: <b>{_fmt(v)}</b></li>" for k, v in (answer.get("headline") or {}).items())
        return f'<div class="answer">{html.escape(answer["answer"])}</div>' + (f"<ul>{shown}</ul>" if shown else "")
    shown = "<br>".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in list(metrics.items())[:n_metrics])
    if len(metrics) > n_metrics:
        shown += f"<br><i>… {len(metrics) - n_metrics} more in metrics.json</i>"
    return shown


def index_html(run: dict[str, Any], metrics: dict[str, dict[str, Any]], n_metrics: int = 6,
               answers: dict[str, dict[str, Any]] | None = None) -> str:
    """The run's front page: one row per notebook with status, duration, its answer and links."""
    rows = []
    for stem, nb in run["notebooks"].items():
        status = nb.get("status", "not run")
        dur = nb.get("duration_s")
        shown = _answer_cell((answers or {}).get(stem, {}), metrics.get(stem, {}), n_metrics)
        links = [_relative_link(nb[key], label) for key, label in (("html", "report"), ("ipynb", "notebook"))
                 if nb.get(key)]
        if nb.get("error"):
            links.append(f'<span class="failed">{html.escape(nb["error"][:200])}</span>')
        note = f'<br><span class="note">{html.escape(nb["note"])}</span>' if nb.get("note") else ""
        rows.append(f'<tr><td>{html.escape(stem)}</td><td class="{html.escape(status.replace(" ", "-"))}">'
                    f'{html.escape(status)}{note}</td><td>{"" if dur is None else f"{dur:.1f} s"}</td><td>{shown}</td><td>{" · ".join(links)}</td></tr>')
    git = run.get("git", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Run {html.escape(run['run_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:top;font-size:.92em}}
.ok{{color:#1a7f37;font-weight:600}}.failed{{color:#cf222e;font-weight:600}}.not-run{{color:#6e7781}}
.running{{color:#9a6700}}.reused{{color:#1a7f37}}.ran{{color:#1a7f37;font-weight:600}}
.interrupted{{color:#9a6700;font-weight:600}}.note{{color:#57606a;font-size:.85em}}
.answer{{max-width:640px}}ul{{margin:4px 0;padding-left:18px}}#lab-note{{color:#57606a;font-size:.85em}}</style>
</head><body>
<h1>Workbook run {html.escape(run['run_id'])}</h1>
<p>profile <b>{html.escape(run['profile'])}</b> · started {html.escape(run.get('started', ''))} ·
finished {html.escape(str(run.get('finished') or '—'))} · status <b>{html.escape(run.get('status', ''))}</b> ·
commit {html.escape(str(git.get('git_commit') or 'n/a')[:10])}{' (dirty)' if git.get('git_dirty') else ''}</p>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>answer</th><th>links</th></tr>
{''.join(rows)}</table>
<p>Resolved parameters, versions and timings: {_relative_link("run.json", "run.json")}.</p>
{_LAB_LINKS}</body></html>
"""


# JupyterLab shows an HTML file from a blob: URL in a sandboxed frame whose <base> is the file's /files/
# URL with the session's ``_xsrf`` token. A link from a blob: page is sent without a Referer, so Jupyter
# Server answers a /files/ request that has no ``_xsrf`` with "403 Forbidden". The script (it runs when the
# viewer trusts the page, and in any plain browser) copies the token onto each relative link; the note
# says what to do where scripts cannot run, and the script hides it where they can.
_LAB_LINKS = """<p id="lab-note">In JupyterLab's HTML viewer the links open after <b>Trust HTML</b> (toolbar
above this page), or open this page with <b>Open in New Browser Tab</b> (right-click it in the file browser).</p>
<script>(function(){var note=document.getElementById("lab-note");if(note){note.style.display="none";}
var xsrf=new URL(document.baseURI).searchParams.get("_xsrf");if(!xsrf){return;}
document.querySelectorAll("a[data-relative]").forEach(function(a){var u=new URL(a.getAttribute("href"),
document.baseURI);u.searchParams.set("_xsrf",xsrf);a.href=u.href;});})();</script>"""


def _relative_link(target: str, label: str) -> str:
    """A link to a file inside the run folder, by its path relative to index.html (opens in a new tab)."""
    if target.startswith(("/", "\\")) or "://" in target or ".." in Path(target).parts:
        raise ValueError(f"index link {target!r} is not a path inside the run folder")
    return f'<a data-relative href="{html.escape(target)}" target="_blank" rel="noopener">{html.escape(label)}</a>'
