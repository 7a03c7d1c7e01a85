"""An interactive page for a trace: one self-contained HTML file, no network, no server.

It steps through time (buttons, a slider, the arrow keys), highlights the current step in the
unrolled diagram, fills the equation in with the current numbers as heat maps, and ends by
comparing the trace with what the layer returned. Everything (data, script, style, the diagram as
SVG) is inlined.

Stable hooks for tests and for readers of the source: `#step-slider`, `#btn-first`, `#btn-prev`,
`#btn-play`, `#btn-next`, `#btn-last`, `#sample-select`, `#step-label` (`data-k`, `data-t`),
`#mask-flag` (`data-masked`), one table per vector `#v-{cell}-{name}` whose cells carry
`data-value`, `#v-out` (the layer's output at this step), `#compare` with `#maxdiff`
(`data-value`) and `#maxdiff-normal`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import numpy as np

__all__ = ["page_html", "write_page", "page_data", "model_page_html"]

# What the equation row shows for the built-in cell, in order: (name, operator before it).
SIMPLE_TERMS = [("x_t", ""), ("h_prev", ";"), ("xU", "⇒"), ("hW", "+"), ("b", "+"), ("z", "="),
                ("h", "→")]
LABELS = {"x_t": "x_t", "h_prev": "h_{t-1}", "c_prev": "c_{t-1}", "xU": "x_t U",
          "hW": "h_{t-1} W", "b": "b", "z": "z", "h": "h_t", "c": "c_t", "i": "i", "f": "f",
          "g": "g", "o": "o", "r": "r", "hh": "h̃"}


def _list(array: Any) -> Any:
    return np.asarray(array, dtype=np.float64).tolist()


def page_data(tr: Any, check: bool = True) -> dict:
    """Everything the page shows, as JSON-ready lists.

    Args:
        tr: a `Trace`.
        check: also call the layer again normally (no recorder, so any fast path) and compare;
            skipped for stateful layers, whose states a second call would advance.
    """
    from unrolled.explain import _text
    from unrolled.explain.animation import state_h
    from unrolled.explain.diagrams import visible_steps

    cells = []
    for d, cell in enumerate(tr.cells):
        kind = type(cell).__name__
        recorded = list(tr.steps[0].cells[d]) if tr.steps and tr.steps[0].cells[d] else []
        if kind == "SimpleRNNCell":
            terms = [[n, op] for n, op in SIMPLE_TERMS if n in recorded]
        else:
            terms = [[n, ""] for n in recorded]
        act = _text._activation_name(getattr(cell, "activation", None))
        cells.append({"kind": kind, "name": getattr(cell, "name", ""), "terms": terms,
                      "labels": {n: LABELS.get(n, n) for n in recorded}, "activation": act})
    steps = []
    for step in tr.steps:
        steps.append({
            "k": step.k, "t": step.t,
            "mask": None if step.mask is None else [bool(m) for m in step.mask],
            "cells": [{n: _list(v) for n, v in c.items()} for c in step.cells],
            "states": [_list(state_h(tr, step.states, d)) for d in range(tr.depth)],
            "output": _list(step.output),
        })
    returned = tr.output if not tr.is_cell else tr.result[0]
    returned = np.asarray(returned)
    from_trace = tr.h if returned.ndim == 3 else tr.steps[-1].output
    diff = float(np.abs(np.asarray(from_trace, np.float64) - returned).max())
    normal_diff = None
    if check and not tr.is_cell and not getattr(tr.layer, "stateful", False):
        again = tr.layer(tr.x, initial_state=tr.initial_state_arg, mask=tr.mask_arg)
        again = again[0] if isinstance(again, tuple) else again
        normal_diff = float(np.abs(np.asarray(from_trace, np.float64) - again).max())
    n = len(tr.steps)
    explanation = _text.explain(tr.layer, tr.x)
    equations = [line for c in explanation.cells for line in c.keras]
    values = [abs(v) for s in tr.steps for c in s.cells for a in c.values()
              for v in np.ravel(a)] + [abs(v) for s in tr.steps for v in np.ravel(s.output)]
    return {
        "title": f"{type(tr.layer).__name__} '{getattr(tr.layer, 'name', '')}'",
        "repr": repr(tr.layer), "batch": tr.batch, "n_steps": n, "depth": tr.depth,
        "is_cell": tr.is_cell, "x_shape": list(tr.x.shape), "cells": cells, "steps": steps,
        "initial": [_list(state_h(tr, tr.initial_states, d)) for d in range(tr.depth)],
        "visible": visible_steps(n if not tr.is_cell else 1, 6),
        "equations": equations, "vmax": float(max(values, default=1.0)) or 1.0,
        "returned": _list(returned), "returned_shape": list(returned.shape),
        "maxdiff": diff, "maxdiff_normal": normal_diff,
        "return_sequences": bool(getattr(tr.layer, "return_sequences", False)),
    }


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#111827}
h1{font-size:1.25rem;margin:0 0 4px} .muted{color:#6b7280;font-size:.85rem}
#controls{display:flex;gap:6px;align-items:center;margin:10px 0;flex-wrap:wrap}
#controls button{font-size:1rem;padding:3px 10px;cursor:pointer}
#step-slider{width:260px} #step-label{font-weight:600;min-width:170px}
#diagram svg{max-width:100%;height:auto} #diagram{border:1px solid #e5e7eb;border-radius:6px}
.eq-row{display:flex;align-items:flex-end;gap:6px;flex-wrap:wrap;margin:10px 0}
.term{display:flex;flex-direction:column;align-items:center}
.term .lab{font-family:Georgia,serif;font-style:italic;font-size:.85rem;color:#374151}
.op{font-size:1.2rem;padding:0 2px 4px}
table.vec{border-collapse:collapse} table.vec td{border:1px solid #d1d5db;padding:2px 5px;
font:12px ui-monospace,monospace;text-align:right;min-width:44px}
#mask-flag[data-masked=true]{color:#b91c1c;font-weight:600}
#compare{margin-top:14px;padding:8px 12px;border-radius:6px;background:#f0fdf4;
border:1px solid #86efac} #compare.hidden{display:none}
.eqn{font-family:Georgia,serif;font-style:italic}
"""

_SCRIPT = r"""
(function(){
const D = JSON.parse(document.getElementById('trace-data').textContent);
const root = document.getElementById('unrolled-page');
const $ = (sel) => root.querySelector(sel);
let k = 0, sample = 0, timer = null;
const original = new Map();
function color(v){
  const a = Math.max(-1, Math.min(1, v / D.vmax));
  const r = a > 0 ? 255 : Math.round(255 * (1 + a)), b = a < 0 ? 255 : Math.round(255 * (1 - a));
  const g = Math.round(255 * (1 - Math.abs(a)) * 0.92 + 20 * (1 - Math.abs(a)));
  return 'rgb(' + r + ',' + Math.min(255, g) + ',' + b + ')';
}
function fill(table, vec){
  table.innerHTML = '';
  const row = document.createElement('tr');
  vec.forEach((v) => {
    const td = document.createElement('td');
    td.dataset.value = String(v);
    td.textContent = v.toFixed(3);
    td.style.background = color(v);
    td.style.color = Math.abs(v / D.vmax) > 0.6 ? 'white' : '#111827';
    row.appendChild(td);
  });
  table.appendChild(row);
}
function pick(a){ return Array.isArray(a[0]) ? a[sample] : a; }
function highlight(){
  root.querySelectorAll('#diagram g[id^="cell-"], #diagram g#ellipsis').forEach((g) => {
    const p = g.querySelector('path'); if (!p) return;
    if (!original.has(p)) original.set(p, p.style.fill || '');
    p.style.fill = original.get(p); p.style.fillOpacity = '';
  });
  const visible = D.visible.includes(k);
  const targets = visible ? root.querySelectorAll('#diagram g[id^="cell-"][id$="-' + k + '"]')
                          : root.querySelectorAll('#diagram g#ellipsis');
  targets.forEach((g) => { const p = g.querySelector('path');
    if (p) { p.style.fill = '#fdba74'; p.style.fillOpacity = '0.9'; } });
}
function render(){
  const s = D.steps[k];
  const label = $('#step-label');
  label.dataset.k = String(k); label.dataset.t = String(s.t);
  label.textContent = D.is_cell ? 'one step' : 'step ' + (k + 1) + ' of ' + D.n_steps + '  (reads x[:, ' + s.t + '])';
  $('#step-slider').value = String(k);
  const masked = s.mask !== null && !s.mask[sample];
  const flag = $('#mask-flag');
  flag.dataset.masked = String(masked);
  flag.textContent = s.mask === null ? '' : (masked ? 'masked for this sample: the state is carried over unchanged, the output repeats the previous one' : 'mask: real step');
  D.cells.forEach((c, d) => {
    c.terms.forEach(([name]) => {
      const t = $('#v-' + d + '-' + name);
      if (t && s.cells[d][name] !== undefined) fill(t, pick(s.cells[d][name]));
    });
    const st = $('#v-' + d + '-state'); if (st) fill(st, s.states[d][sample]);
  });
  fill($('#v-out'), s.output[sample]);
  $('#compare').classList.toggle('hidden', k !== D.n_steps - 1);
  highlight();
}
function go(n){ k = Math.max(0, Math.min(D.n_steps - 1, n)); render(); }
$('#btn-first').onclick = () => go(0);
$('#btn-prev').onclick = () => go(k - 1);
$('#btn-next').onclick = () => go(k + 1);
$('#btn-last').onclick = () => go(D.n_steps - 1);
$('#btn-play').onclick = () => {
  if (timer) { clearInterval(timer); timer = null; $('#btn-play').textContent = 'play'; return; }
  if (k === D.n_steps - 1) go(0);
  $('#btn-play').textContent = 'pause';
  timer = setInterval(() => { if (k >= D.n_steps - 1) { clearInterval(timer); timer = null;
    $('#btn-play').textContent = 'play'; } else go(k + 1); }, 900);
};
$('#step-slider').oninput = (e) => go(parseInt(e.target.value, 10));
$('#sample-select').onchange = (e) => { sample = parseInt(e.target.value, 10); render(); };
document.addEventListener('keydown', (e) => {
  if (e.key === 'ArrowRight') { go(k + 1); e.preventDefault(); }
  else if (e.key === 'ArrowLeft') { go(k - 1); e.preventDefault(); }
  else if (e.key === 'Home') go(0); else if (e.key === 'End') go(D.n_steps - 1);
});
render();
})();
"""


def _vector_table(id_: str) -> str:
    return f'<table class="vec" id="{id_}"></table>'


def _math(text: str) -> str:
    from unrolled.explain._text import math_html

    return math_html(text)


def page_html(tr: Any, inline: bool = False, check: bool = True) -> str:
    """The page for `tr` as HTML text.

    Args:
        tr: a `Trace`.
        inline: return an `<iframe srcdoc=...>` for a notebook (keeps the page's ids, styles and
            keys to itself) rather than a whole document.
        check: compare with a normal call of the layer too (see `page_data`).
    """
    from unrolled.explain import diagrams

    data = page_data(tr, check=check)
    e = html.escape
    svg = diagrams.unrolled(tr.layer, tr.x).svg() if not tr.is_cell else \
        diagrams.cell_inside(tr.layer, tr.x).svg()
    svg = svg[svg.find("<svg"):]  # drop the XML prologue and doctype inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    rows = []
    for d, cell in enumerate(data["cells"]):
        parts = [f'<div class="eq-row" data-cell="{d}">']
        if tr.depth > 1:
            parts.append(f'<div class="term"><b>cell {d + 1}</b><span class="muted">'
                         f'{e(cell["kind"])}</span></div>')
        for name, op in cell["terms"]:
            if op:
                parts.append(f'<span class="op">{e(op)}</span>')
            label = cell["labels"].get(name, name)
            if name == "h" and cell["kind"] == "SimpleRNNCell":
                label = f"h_t = {cell['activation']}(z)"
            parts.append(f'<div class="term"><span class="lab">{_math(label)}</span>'
                         f'{_vector_table(f"v-{d}-{name}")}</div>')
        parts.append('<span class="op">⇒</span><div class="term"><span class="lab">state kept '
                     f'(after the mask)</span>{_vector_table(f"v-{d}-state")}</div>')
        parts.append("</div>")
        rows.append("".join(parts))
    slider_max = data["n_steps"] - 1
    options = "".join(f'<option value="{b}">sample {b + 1}</option>' for b in range(data["batch"]))
    eqs = "<br>".join(_math(line) for line in data["equations"])
    normal = data["maxdiff_normal"]
    returned_what = ("the whole returned sequence" if data["return_sequences"]
                     else "the returned last output")
    body = f"""
<div id="unrolled-page" data-steps="{data['n_steps']}" data-batch="{data['batch']}">
<h1>{e(data['title'])}</h1>
<div class="muted"><code>{e(data['repr'])}</code> on x of shape {tuple(data['x_shape'])}</div>
<p>{eqs}</p>
<div id="controls">
 <button id="btn-first" title="first step (Home)">|◀</button>
 <button id="btn-prev" title="previous step (←)">◀</button>
 <button id="btn-play" title="play">play</button>
 <button id="btn-next" title="next step (→)">▶</button>
 <button id="btn-last" title="last step (End)">▶|</button>
 <input id="step-slider" type="range" min="0" max="{slider_max}" value="0" step="1"
  aria-label="timestep">
 <span id="step-label" data-k="0" data-t="0"></span>
 <select id="sample-select" aria-label="sample">{options}</select>
 <span id="mask-flag" data-masked="false"></span>
</div>
<div id="diagram">{svg}</div>
<h3>The step, filled in (sample shown in the menu)</h3>
<div id="equation">{''.join(rows)}</div>
<div class="eq-row"><div class="term"><span class="lab">the layer's output at this step</span>
{_vector_table('v-out')}</div></div>
<div id="compare" class="hidden">
 <b>Compared with the layer.</b> The trace's outputs against {returned_what}
 {tuple(data['returned_shape'])}: max |trace − returned| =
 <span id="maxdiff" data-value="{data['maxdiff']!r}">{data['maxdiff']:.3g}</span>.
 {'' if normal is None else
  f'A normal call (no recorder): max |trace − call| = <span id="maxdiff-normal" '
  f'data-value="{normal!r}">{normal:.3g}</span>.'}
</div>
</div>
<script type="application/json" id="trace-data">{_json(data)}</script>
<script>{_SCRIPT}</script>"""
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{e(data['title'])}: trace</title><style>{_STYLE}</style></head>"
                f"<body>{body}</body></html>")
    if inline:
        return (f'<iframe srcdoc="{html.escape(document, quote=True)}" '
                f'style="width:100%;height:760px;border:1px solid #e5e7eb"></iframe>')
    return document


def _json(data: dict) -> str:
    return json.dumps(data, allow_nan=False).replace("</", "<\\/")


def write_page(tr: Any, path: str) -> str:
    """Write the page for `tr` to `path` (one self-contained HTML file); returns the path."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page_html(tr))
    return path


def model_page_html(mt: Any, inline: bool = False) -> str:
    """The page for a `ModelTrace`: every layer's output shape, and each recurrent layer's own
    page (as `page_html` makes it) behind a layer menu `#layer-select`; one page is shown at a
    time, in an `<iframe class="layer-page" data-name=...>`.

    Args:
        mt: a `ModelTrace`.
        inline: return an `<iframe srcdoc=...>` for a notebook.
    """
    e = html.escape
    title = f"{type(mt.obj).__name__} '{mt.obj.name}'"
    rows = []
    for name, value in mt.outputs.items():
        flat = value if isinstance(value, (list, tuple)) else [value]
        shapes = ", ".join(str(tuple(np.shape(v))) for v in flat if v is not None)
        mask = mt.masks.get(name)
        mask_text = ""
        if mask is not None and not isinstance(mask, (list, tuple)) and np.ndim(mask) == 2:
            mask_text = f"{int(np.sum(~np.asarray(mask, bool)))} steps masked"
        rows.append(f"<tr><td>{e(name)}</td><td><code>{e(shapes)}</code></td>"
                    f"<td>{e(mask_text)}</td></tr>")
    options = "".join(f'<option value="{n}">{e(name)} ({e(type(tr.layer).__name__)})</option>'
                      for n, (name, tr) in enumerate(mt.traces.items()))
    frames = "".join(
        f'<iframe class="layer-page" data-name="{e(name)}" srcdoc="{e(page_html(tr), quote=True)}"'
        f' style="width:100%;height:780px;border:1px solid #e5e7eb;'
        f'{"" if n == 0 else "display:none"}"></iframe>'
        for n, (name, tr) in enumerate(mt.traces.items()))
    script = """
(function(){
const select = document.getElementById('layer-select');
const frames = document.querySelectorAll('iframe.layer-page');
select.onchange = () => { frames.forEach((f, n) => {
  f.style.display = String(n) === select.value ? '' : 'none'; }); };
})();"""
    document = f"""<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<title>{e(title)}: trace</title><style>{_STYLE}
#layers td{{padding:1px 10px;font-size:.9rem}}</style></head><body>
<h1>{e(title)}</h1>
<div class="muted">One run of the model; every recurrent layer traced on the input, mask and
states the model gave it.</div>
<table id="layers"><tr><th align="left">layer</th><th align="left">output</th>
<th align="left">mask</th></tr>{''.join(rows)}</table>
<p><label>Recurrent layer: <select id="layer-select">{options}</select></label></p>
{frames}
<script>{script}</script></body></html>"""
    if inline:
        return (f'<iframe srcdoc="{html.escape(document, quote=True)}" '
                f'style="width:100%;height:1000px;border:none"></iframe>')
    return document
