"""Reports of a pipeline output folder, always regenerated from the journal (no Qt).

Per section ``S`` (folder ``OUTDIR/S/``):

* ``report.csv`` / ``report.json``: one row per input file of the section (file, section,
  state, score, decision, corrected path, error, ...), sorted by name. They hold no times or
  attempt counts, so they are a deterministic function of the inputs and the settings: an
  interrupted-and-resumed run writes the same bytes as an uninterrupted one.
* ``qc.png``: heatmap of the subtile scores, each acquisition tile placed by its stage
  coordinates (``full_image_coordinates.txt``) when known, else on a grid in name order; tiles
  to correct are outlined orange, tiles to retake red, failed tiles crossed out.

``OUTDIR/index.html``: summary of all sections (tiles, % flagged, % to retake, tiles corrected,
failures) and the throughput of the runs (tiles/s, Mpx/s).

Every file is written to a hidden temporary file in the same folder and moved into place with
``os.replace``: a reader sees the previous or the new version, never a partial one.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .journal import Journal, Row

CSV_COLUMNS = (
    "file",
    "section",
    "name",
    "state",
    "score",
    "decision",
    "subtiles",
    "subtiles_flagged",
    "subtiles_retake",
    "corrected",
    "score_after",
    "error",
)
MAX_CANVAS_CELLS = 2048  # QC heatmap side limit (cells); larger layouts are binned


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fmt(v, digits: int = 6) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def _row_entry(row: Row) -> dict:
    r = row.result_dict
    finished = row.state in ("done", "failed")
    entry = {
        "file": row.rel,
        "section": row.section,
        "name": row.name,
        "state": row.state if finished else "pending",  # seen / processing: not in the reports
        "score": r.get("score") if finished else None,
        "decision": (r.get("decision") or "") if row.state == "done" else "",
        "subtiles": r.get("n_subtiles", 0) if row.state == "done" else 0,
        "subtiles_flagged": r.get("n_flagged", 0) if row.state == "done" else 0,
        "subtiles_retake": r.get("n_retake", 0) if row.state == "done" else 0,
        "corrected": r.get("corrected") if row.state == "done" else None,
        "score_after": r.get("score_after") if row.state == "done" else None,
        "error": row.error if row.state == "failed" else None,
    }
    return entry


def section_summary(rows: Iterable[Row]) -> dict:
    rows = list(rows)
    done = [r for r in rows if r.state == "done"]
    dec = [r.result_dict.get("decision") for r in done]
    n_done = len(done)
    n_corr = sum(1 for r in done if r.result_dict.get("corrected"))
    scores = [r.result_dict.get("score") for r in done]
    scores = [s for s in scores if isinstance(s, (int, float)) and math.isfinite(s)]
    return {
        "files": len(rows),
        "done": n_done,
        "failed": sum(1 for r in rows if r.state == "failed"),
        "pending": sum(1 for r in rows if r.state in ("seen", "processing")),
        "ok": dec.count("ok"),
        "correct": dec.count("correct"),
        "retake": dec.count("retake"),
        "corrected": n_corr,
        "pct_flagged": round(100.0 * (dec.count("correct") + dec.count("retake")) / n_done, 2) if n_done else 0.0,
        "pct_retake": round(100.0 * dec.count("retake") / n_done, 2) if n_done else 0.0,
        "median_score": round(float(np.median(scores)), 6) if scores else None,
    }


def write_section_report(journal: Journal, section: str, settings: dict | None = None) -> dict:
    """(Re)write ``report.csv``, ``report.json`` and ``qc.png`` of ``section``; returns its summary."""
    rows = journal.rows(section=section)
    settings = settings if settings is not None else journal.get_meta("settings", {})
    sdir = journal.outdir / section
    entries = [_row_entry(r) for r in rows]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        w.writerow([_fmt(e[c]) for c in CSV_COLUMNS])
    atomic_write_bytes(sdir / "report.csv", buf.getvalue().encode())

    positions = journal.positions(section)
    summary = section_summary(rows)
    tiles = []
    for r, e in zip(rows, entries):
        res = r.result_dict if r.state in ("done", "failed") else {}
        t = dict(e)
        t["shape"] = res.get("shape") or None
        t["subtile_scores"] = res.get("subtile_scores") if r.state == "done" else None
        t["position"] = list(positions[r.name]) if r.name in positions else None
        t["sha256"] = r.sha256 if r.state == "done" else None
        tiles.append(t)
    doc = {
        "section": section,
        "settings": {k: settings.get(k) for k in ("metric", "tile", "correct_threshold", "retake_threshold", "correct")},
        "summary": summary,
        "tiles": tiles,
    }
    atomic_write_bytes(sdir / "report.json", (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    atomic_write_bytes(sdir / "qc.png", render_qc_png(section, rows, positions, settings))
    return summary


# --------------------------------------------------------------------------- QC heatmap
def _layout(rows: list[Row], positions: dict, tile: int) -> list[tuple[Row, float, float]]:
    """(row, x0, y0) in px for every row: stage positions if all done rows have one, else a grid."""
    placed = [r for r in rows if r.state in ("done", "failed")]
    if placed and all(r.name in positions for r in placed):
        return [(r, positions[r.name][0], positions[r.name][1]) for r in placed]
    shapes = [r.result_dict.get("shape") or [tile, tile] for r in placed]
    hmax = max([s[0] for s in shapes] + [tile])
    wmax = max([s[1] for s in shapes] + [tile])
    ncols = max(1, math.ceil(math.sqrt(len(placed))))
    gap = tile
    return [
        (r, (k % ncols) * (wmax + gap), (k // ncols) * (hmax + gap)) for k, r in enumerate(placed)
    ]


def render_qc_png(section: str, rows: list[Row], positions: dict, settings: dict) -> bytes:
    """PNG bytes of the section's QC heatmap (matplotlib Agg, no pyplot, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    tile = int(settings.get("tile") or 256)
    ct = settings.get("correct_threshold")
    rt = settings.get("retake_threshold")
    layout = _layout(rows, positions, tile)
    fig = Figure(figsize=(7.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    summ = section_summary(rows)
    ax.set_title(
        f"{section}: {summ['done']} tiles, {summ['pct_flagged']:.1f}% flagged, "
        f"{summ['pct_retake']:.1f}% retake, {summ['failed']} failed",
        fontsize=9,
    )
    if not layout:
        ax.text(0.5, 0.5, "no tiles processed yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        x0 = min(x for _, x, _ in layout)
        y0 = min(y for _, _, y in layout)
        ext = []
        for r, x, y in layout:
            sh = r.result_dict.get("shape") or [tile, tile]
            ext.append((x - x0 + sh[1], y - y0 + sh[0]))
        width = max(e[0] for e in ext)
        height = max(e[1] for e in ext)
        cell = float(tile)
        ncx, ncy = math.ceil(width / cell), math.ceil(height / cell)
        if max(ncx, ncy) > MAX_CANVAS_CELLS:  # bin huge layouts
            cell *= max(ncx, ncy) / MAX_CANVAS_CELLS
            ncx, ncy = math.ceil(width / cell), math.ceil(height / cell)
        canvas = np.full((ncy, ncx), np.nan, np.float32)
        finite_all = []
        for r, x, y in layout:
            if r.state != "done":
                continue
            sub = r.result_dict.get("subtile_scores") or []
            if not sub:
                continue
            a = np.array([[np.nan if v is None else v for v in rr] for rr in sub], np.float32)
            scale = tile / cell
            cy = int((y - y0) / cell)
            cx = int((x - x0) / cell)
            if scale != 1.0:  # binned: nearest-neighbour resample of the subtile grid
                hh = max(1, int(round(a.shape[0] * scale)))
                ww = max(1, int(round(a.shape[1] * scale)))
                iy = np.minimum((np.arange(hh) / scale).astype(int), a.shape[0] - 1)
                ix = np.minimum((np.arange(ww) / scale).astype(int), a.shape[1] - 1)
                a = a[iy][:, ix]
            hh = min(a.shape[0], ncy - cy)
            ww = min(a.shape[1], ncx - cx)
            canvas[cy : cy + hh, cx : cx + ww] = a[:hh, :ww]
            finite_all.append(a[np.isfinite(a)])
        vals = np.concatenate(finite_all) if finite_all else np.array([], np.float32)
        lo = [float(np.percentile(vals, 1))] if vals.size else []
        hi = [float(np.percentile(vals, 99))] if vals.size else []
        vmin = min(lo + ([rt] if rt is not None else []) or [0.0])
        vmax = max(hi + ([ct] if ct is not None else []) or [1.0])
        if vmax <= vmin:
            vmax = vmin + 1.0
        im = ax.imshow(
            canvas,
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
            extent=(x0, x0 + ncx * cell, y0 + ncy * cell, y0),
        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"focus ({settings.get('metric', '')})")
        for r, x, y in layout:
            sh = r.result_dict.get("shape") or [tile, tile]
            dec = r.result_dict.get("decision") if r.state == "done" else None
            if r.state == "failed":
                ax.add_patch(Rectangle((x, y), sh[1], sh[0], fill=False, ec="#3af", lw=1.0, hatch="xx"))
            elif dec == "retake":
                ax.add_patch(Rectangle((x, y), sh[1], sh[0], fill=False, ec="red", lw=2.0))
            elif dec == "correct":
                ax.add_patch(Rectangle((x, y), sh[1], sh[0], fill=False, ec="orange", lw=1.2))
        ax.set_xlim(x0, x0 + ncx * cell)
        ax.set_ylim(y0 + ncy * cell, y0)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.tick_params(labelsize=7)
    fig.text(0.01, 0.01, "outline: orange = correct, red = retake; hatched = failed to read",
             fontsize=7, color="#444")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": "napari-emdeblur"})
    return buf.getvalue()


# --------------------------------------------------------------------------- index.html
def write_index(journal: Journal, live: dict | None = None) -> None:
    """(Re)write ``OUTDIR/index.html`` from the journal; ``live`` = the current run's counters."""
    settings = journal.get_meta("settings", {})
    secs = []
    tot = {"files": 0, "done": 0, "failed": 0, "pending": 0, "correct": 0, "retake": 0, "corrected": 0}
    for s in journal.sections():
        summ = section_summary(journal.rows(section=s))
        secs.append((s, summ))
        for k in tot:
            tot[k] += summ[k]
    runs = journal.runs()
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>emdeblur pipeline</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        ".bad{color:#b00}</style></head><body>",
        f"<h1>emdeblur pipeline: {e(str(journal.outdir))}</h1>",
        f"<p>Updated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}. Metric <b>{e(str(settings.get('metric')))}</b>, "
        f"QC tile {e(str(settings.get('tile')))} px, correct below {e(_fmt(settings.get('correct_threshold')))}, "
        f"retake below {e(_fmt(settings.get('retake_threshold')))}, correction "
        f"{'on' if settings.get('correct') else 'off'}.</p>",
    ]
    done = tot["done"]
    pf = 100.0 * (tot["correct"] + tot["retake"]) / done if done else 0.0
    pr = 100.0 * tot["retake"] / done if done else 0.0
    out.append(
        f"<p><b>{tot['files']}</b> files: {done} done, {tot['failed']} failed, {tot['pending']} pending; "
        f"{pf:.1f}% flagged, {pr:.1f}% to retake, {tot['corrected']} tiles corrected.</p>"
    )
    rates = []
    for r in runs[-5:]:
        n, px = r["done"], r["pixels"]
        end = r["ended"]
        if live is not None and r["id"] == live.get("run_id"):
            n, px, end = live["done"], live["pixels"], time.time()
        dt = (end or r["started"]) - r["started"]
        rate = f"{n / dt:.2f} tiles/s, {px / dt / 1e6:.1f} Mpx/s" if dt > 0 and n else "-"
        rates.append(
            f"<tr><td>{r['id']} {e(r['kind'])}</td><td>{e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['started'])))}</td>"
            f"<td>{n}</td><td>{r['failed'] if live is None or r['id'] != live.get('run_id') else live['failed']}</td>"
            f"<td>{dt:.1f}</td><td>{rate}</td></tr>"
        )
    out.append("<h2>Sections</h2><table><tr><th>section</th><th>files</th><th>done</th><th>failed</th>"
               "<th>pending</th><th>% flagged</th><th>% retake</th><th>corrected</th><th>median score</th>"
               "<th>reports</th></tr>")
    for s, summ in secs:
        q = e(s)
        out.append(
            f"<tr><td>{q}</td><td>{summ['files']}</td><td>{summ['done']}</td>"
            f"<td class='{'bad' if summ['failed'] else ''}'>{summ['failed']}</td><td>{summ['pending']}</td>"
            f"<td>{summ['pct_flagged']:.1f}</td><td>{summ['pct_retake']:.1f}</td><td>{summ['corrected']}</td>"
            f"<td>{_fmt(summ['median_score'], 4)}</td>"
            f"<td><a href='{q}/qc.png'>QC</a> <a href='{q}/report.csv'>csv</a> <a href='{q}/report.json'>json</a></td></tr>"
        )
    out.append("</table>")
    for s, _ in secs:
        out.append(f"<h3>{e(s)}</h3><img src='{e(s)}/qc.png' width='560'>")
    out.append("<h2>Runs</h2><table><tr><th>run</th><th>started</th><th>tiles</th><th>failed</th>"
               "<th>seconds</th><th>throughput</th></tr>")
    out.extend(rates)
    out.append("</table></body></html>\n")
    atomic_write_bytes(journal.outdir / "index.html", "\n".join(out).encode())


class ReportWriter:
    """Regenerates the reports of the sections that changed, at most every ``interval`` s.

    The journal's ``reports_clean`` flag is cleared before the first change after a flush and
    set again after the next complete flush, so a run killed in between (reports older than the
    journal) is detected by the next run, which then rebuilds every section's reports.
    """

    def __init__(self, journal: Journal, interval: float = 5.0):
        self.journal = journal
        self.interval = float(interval)
        self.dirty: set[str] = set()
        self._last = time.monotonic()  # first regeneration one interval in (or at the end)
        self._flag = journal.get_meta("reports_clean", True) is False
        if self._flag:
            self.dirty.update(journal.sections())

    def mark(self, section: str) -> None:
        if not self._flag:
            self.journal.set_meta("reports_clean", False)
            self._flag = True
        self.dirty.add(section)

    def flush(self, force: bool = False, live: dict | None = None) -> bool:
        if not force and (not self.dirty or time.monotonic() - self._last < self.interval):
            return False
        settings = self.journal.get_meta("settings", {})
        for s in sorted(self.dirty):
            write_section_report(self.journal, s, settings)
            self.dirty.discard(s)
        write_index(self.journal, live)
        self._last = time.monotonic()
        if self._flag:
            self.journal.set_meta("reports_clean", True)
            self._flag = False
        return True

    def rebuild_all(self, live: dict | None = None) -> None:
        self.dirty.update(self.journal.sections())
        self.flush(force=True, live=live)
