"""The console's style sheet and its one small script, served from /static/ (the Content
Security Policy allows scripts and styles from the console itself only, never inline)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

CSS = """
:root { --ink: #1f2933; --muted: #66788a; --line: #d9e2ec; --bg: #f5f7fa; --bar: #243b53;
        --ok: #2f855a; --warn: #b7791f; --bad: #c53030; --idle: #829ab1; --accent: #2b6cb0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans",
       sans-serif; color: var(--ink); background: var(--bg); }
header { display: flex; align-items: center; gap: 24px; padding: 10px 24px; background: var(--bar);
         color: #fff; }
header .brand { font-weight: 600; letter-spacing: .02em; }
header nav { display: flex; gap: 4px; flex: 1; }
header nav a { color: #d9e2ec; text-decoration: none; padding: 5px 10px; border-radius: 4px; }
header nav a.active, header nav a:hover { background: rgba(255,255,255,.14); color: #fff; }
header .who { color: #bcccdc; font-size: 13px; }
header .who button.link { color: #bcccdc; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 24px 48px; }
h1 { font-size: 20px; margin: 4px 0 14px; }
h2 { font-size: 15px; margin: 26px 0 8px; }
a { color: var(--accent); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 8px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
        min-width: 150px; }
.card .n { font-size: 22px; font-weight: 600; }
.card.bad { border-left: 4px solid var(--bad); } .card.warn { border-left: 4px solid var(--warn); }
.card .l { color: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line);
        border-radius: 6px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: #eef2f7; font-weight: 600; font-size: 12px; color: #334e68; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num, th.num { text-align: right; }
.mono, pre { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace;
             font-size: 12.5px; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         color: #fff; font-weight: 600; }
.badge.ok { background: var(--ok); } .badge.warn { background: var(--warn); }
.badge.bad { background: var(--bad); } .badge.idle { background: var(--idle); }
.muted, .empty { color: var(--muted); }
.notice { padding: 8px 12px; border-radius: 6px; background: #e6fffa; border: 1px solid #81e6d9; }
.notice.bad { background: #fff5f5; border-color: #feb2b2; }
.notice.warn { background: #fffaf0; border-color: #fbd38d; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: end; background: #fff;
               border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
               margin-bottom: 12px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input[type=text], input[type=password], select { font: inherit; padding: 4px 6px;
       border: 1px solid #bcccdc; border-radius: 4px; min-width: 120px; }
button, .button { font: inherit; padding: 5px 12px; border-radius: 4px; border: 1px solid #9fb3c8;
                  background: #fff; cursor: pointer; color: var(--ink); text-decoration: none; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger { background: #fff; border-color: var(--bad); color: var(--bad); }
button.danger.solid { background: var(--bad); color: #fff; }
button.link { border: 0; background: none; padding: 0; color: var(--accent); }
form.inline { display: inline; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 10px 0; }
.pages { margin: 10px 0; display: flex; gap: 12px; align-items: center; color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; background: #fff;
           border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
form.login { max-width: 360px; display: flex; flex-direction: column; gap: 10px; background: #fff;
             border: 1px solid var(--line); border-radius: 6px; padding: 16px; }
form.login label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
"""

#: The "select all" box of a table of checkboxes; the only script.
JS = """
document.addEventListener('change', function (event) {
  var box = event.target;
  if (!box.matches || !box.matches('input[data-select-all]')) { return; }
  var form = box.form;
  form.querySelectorAll('input[type=checkbox][name=id]').forEach(function (item) {
    item.checked = box.checked;
  });
});
"""


async def stylesheet(request: Request) -> Response:
    return Response(CSS, media_type="text/css", headers={"cache-control": "max-age=300"})


async def script(request: Request) -> Response:
    return Response(JS, media_type="text/javascript", headers={"cache-control": "max-age=300"})
