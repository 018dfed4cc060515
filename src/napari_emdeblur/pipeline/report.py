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
import time
from typing import Iterable

import numpy as np

from ..io.atomic import atomic_write_bytes
from ..qc.thresholds import PX_METRICS, px_from_score
from ..qc.tiling import DEFAULT_TILE
from .journal import INDEX_HTML, QC_PNG, REPORT_CSV, REPORT_JSON, Journal, Row

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


def _publish(path: str | os.PathLike, data: bytes) -> None:
    """Write a report file atomically, replacing the previous version."""
    atomic_write_bytes(path, data, overwrite=True, makedirs=True)


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
        "empty": dec.count("empty"),
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
    _publish(sdir / REPORT_CSV, buf.getvalue().encode())

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
    _publish(sdir / REPORT_JSON, _json_one_tile_per_line(doc).encode())
    _publish(sdir / QC_PNG, render_qc_png(section, rows, positions, settings))
    return summary


def _json_one_tile_per_line(doc: dict) -> str:
    """``doc`` as JSON with one tile per line (readable, and encoded by json's C encoder:
    ``indent`` would switch to the pure-Python one, ~10x slower on big sections).
    """
    head = {k: v for k, v in doc.items() if k != "tiles"}
    parts = [json.dumps(head, sort_keys=True, allow_nan=False)[:-1]]  # JSON has no NaN: missing values are null
    tiles = [json.dumps(t, sort_keys=True, allow_nan=False) for t in doc["tiles"]]
    sep = ", " if len(head) else ""
    parts.append(f'{sep}"tiles": [' + ("\n  " + ",\n  ".join(tiles) + "\n" if tiles else "") + "]}")
    return "".join(parts) + "\n"


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


# magma colour map, 17 evenly spaced stops (8-bit sRGB), interpolated linearly
_MAGMA_STOPS = np.array(
    [[0, 0, 4], [10, 8, 34], [29, 17, 71], [54, 16, 107], [81, 18, 124], [106, 28, 129], [131, 38, 129],
     [156, 46, 127], [183, 55, 121], [208, 65, 111], [231, 82, 99], [245, 107, 92], [252, 137, 97],
     [254, 167, 114], [254, 196, 136], [253, 226, 163], [252, 253, 191]],
    np.float64,
)
_MAGMA_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_MAGMA_STOPS)), _MAGMA_STOPS[:, c]) for c in range(3)],
    axis=1,
).round().astype(np.uint8)
_NAN_RGB = (215, 215, 215)
_OUTLINE = {"correct": (255, 150, 0), "retake": (230, 0, 0), "failed": (51, 170, 255)}
_HEAT_W, _HEAT_H = 620, 540  # the heatmap's box in the PNG (px)


def _colorize(a: np.ndarray, vmin: float, vmax: float, covered: np.ndarray | None = None) -> np.ndarray:
    idx = np.clip((a - vmin) / (vmax - vmin) * 255.0, 0, 255)
    idx = np.where(np.isfinite(idx), idx, 0).round().astype(np.uint8)
    rgb = _MAGMA_LUT[idx]
    rgb[~np.isfinite(a)] = _NAN_RGB
    if covered is not None:
        rgb[~covered] = 255  # no tile there: background
    return rgb


def render_qc_png(section: str, rows: list[Row], positions: dict, settings: dict) -> bytes:
    """PNG bytes of the section's QC heatmap.

    Drawn with numpy + Pillow (no matplotlib: the pipeline regenerates it while tiles stream in,
    so it must cost milliseconds): subtile scores on the magma colour map (grey = not
    scorable), each tile outlined orange (correct) or red (retake), failed tiles crossed out in
    blue, a colour bar with the thresholds, title and legend. Deterministic bytes for the same
    journal content.
    """
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    tile = int(settings.get("tile") or DEFAULT_TILE)
    ct = settings.get("correct_threshold")
    rt = settings.get("retake_threshold")
    layout = _layout(rows, positions, tile)
    summ = section_summary(rows)
    font = ImageFont.load_default()
    margin_l, margin_t = 12, 34
    bar_w = 18
    W, H = margin_l + _HEAT_W + 24 + bar_w + 100, margin_t + _HEAT_H + 40
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    title = (f"{section}: {summ['done']} tiles, {summ['pct_flagged']:.1f}% flagged, "
             f"{summ['pct_retake']:.1f}% retake, {summ['failed']} failed")
    draw.text((margin_l, 8), title, fill=(0, 0, 0), font=font)
    if not layout:
        draw.text((margin_l + _HEAT_W // 2 - 60, margin_t + _HEAT_H // 2), "no tiles processed yet",
                  fill=(0, 0, 0), font=font)
    else:
        x0 = min(x for _, x, _ in layout)
        y0 = min(y for _, _, y in layout)
        shapes = [(r.result_dict.get("shape") or [tile, tile]) for r, _, _ in layout]
        width = max(x - x0 + sh[1] for (_, x, _), sh in zip(layout, shapes))
        height = max(y - y0 + sh[0] for (_, _, y), sh in zip(layout, shapes))
        cell = float(tile)
        ncx, ncy = math.ceil(width / cell), math.ceil(height / cell)
        if max(ncx, ncy) > MAX_CANVAS_CELLS:  # bin huge layouts
            cell *= max(ncx, ncy) / MAX_CANVAS_CELLS
            ncx, ncy = math.ceil(width / cell), math.ceil(height / cell)
        canvas = np.full((ncy, ncx), np.nan, np.float32)
        covered = np.zeros((ncy, ncx), bool)
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
            covered[cy : cy + hh, cx : cx + ww] = True
            finite_all.append(a[np.isfinite(a)])
        vals = np.concatenate(finite_all) if finite_all else np.array([], np.float32)
        lo = [float(np.percentile(vals, 1))] if vals.size else []
        hi = [float(np.percentile(vals, 99))] if vals.size else []
        vmin = min(lo + ([rt] if rt is not None else []) or [0.0])
        vmax = max(hi + ([ct] if ct is not None else []) or [1.0])
        if vmax <= vmin:
            vmax = vmin + 1.0
        # heatmap, scaled to fit its box (nearest neighbour: one colour per subtile)
        k = min(_HEAT_W / ncx, _HEAT_H / ncy)
        hw, hh = max(1, int(round(ncx * k))), max(1, int(round(ncy * k)))
        heat = Image.fromarray(_colorize(canvas, vmin, vmax, covered), "RGB").resize((hw, hh), Image.NEAREST)
        img.paste(heat, (margin_l, margin_t))
        draw.rectangle((margin_l - 1, margin_t - 1, margin_l + hw, margin_t + hh), outline=(120, 120, 120))
        ppx = k / cell  # image px per input px
        for (r, x, y), sh in zip(layout, shapes):
            dec = r.result_dict.get("decision") if r.state == "done" else None
            kind = "failed" if r.state == "failed" else dec
            if kind not in _OUTLINE:
                continue
            bx0 = margin_l + (x - x0) * ppx
            by0 = margin_t + (y - y0) * ppx
            bx1 = bx0 + max(1.0, sh[1] * ppx) - 1
            by1 = by0 + max(1.0, sh[0] * ppx) - 1
            box = tuple(int(round(v)) for v in (bx0, by0, bx1, by1))
            draw.rectangle(box, outline=_OUTLINE[kind], width=2 if kind == "retake" else 1)
            if kind == "failed":
                draw.line(box, fill=_OUTLINE[kind])
                draw.line((box[0], box[3], box[2], box[1]), fill=_OUTLINE[kind])
        # colour bar with its range and the thresholds
        bx = margin_l + hw + 24
        ramp = np.linspace(vmax, vmin, _HEAT_H, dtype=np.float64)[:, None].repeat(bar_w, 1)
        img.paste(Image.fromarray(_colorize(ramp, vmin, vmax), "RGB"), (bx, margin_t))
        draw.rectangle((bx - 1, margin_t - 1, bx + bar_w, margin_t + _HEAT_H), outline=(120, 120, 120))

        def ypos(v: float) -> int:
            return margin_t + int(round((vmax - v) / (vmax - vmin) * (_HEAT_H - 1)))

        used: list[int] = []
        for v, label, col in ((ct, f"correct {ct:.4g}" if ct is not None else "", _OUTLINE["correct"]),
                              (rt, f"retake {rt:.4g}" if rt is not None else "", _OUTLINE["retake"]),
                              (vmax, f"{vmax:.4g}", (0, 0, 0)), (vmin, f"{vmin:.4g}", (0, 0, 0))):
            if v is None:
                continue
            yy = ypos(v)
            if any(abs(yy - u) < 12 for u in used):  # a range end on a threshold: keep the threshold
                continue
            used.append(yy)
            draw.line((bx - 4, yy, bx + bar_w + 3, yy), fill=col)
            draw.text((bx + bar_w + 6, yy - 6), label, fill=col if col != _OUTLINE["correct"] else (200, 110, 0), font=font)
        draw.text((bx - 4, margin_t + _HEAT_H + 6), f"focus ({settings.get('metric', '')})", fill=(0, 0, 0), font=font)
    draw.text((margin_l, H - 18), "outline: orange = correct, red = retake; blue cross = failed to read; "
              "grey = not scorable", fill=(68, 68, 68), font=font)
    right = W
    if layout:  # drop the unused width of a tall layout
        right = min(W, max(bx + bar_w + 100, int(draw.textlength(title, font=font)) + 2 * margin_l, 440))
        img = img.crop((0, 0, right, H))
    info = PngInfo()
    info.add_text("Software", "napari-emdeblur")
    info.add_text("Title", title)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------- index.html
def thresholds_text(settings: dict) -> str:
    """An OUTDIR's thresholds as the user gives them (px of excess blur for the blur metric)."""
    c, r = settings.get("correct_threshold"), settings.get("retake_threshold")
    if c is None or r is None:
        return "thresholds not set"
    if settings.get("metric") in PX_METRICS:
        return f"correct above {float(px_from_score(c)):.3g} px, retake above {float(px_from_score(r)):.3g} px"
    return f"correct below {_fmt(c)}, retake below {_fmt(r)}"


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
        f"QC tile {e(str(settings.get('tile')))} px, {e(thresholds_text(settings))}, correction "
        f"{'on' if settings.get('correct') else 'off'}.</p>",
    ]
    skipped = journal.get_meta("problems", {}) or {}
    done = tot["done"]
    pf = 100.0 * (tot["correct"] + tot["retake"]) / done if done else 0.0
    pr = 100.0 * tot["retake"] / done if done else 0.0
    out.append(
        f"<p><b>{tot['files']}</b> files: {done} done, {tot['failed']} failed, {tot['pending']} pending; "
        f"{pf:.1f}% flagged, {pr:.1f}% to retake, {tot['corrected']} tiles corrected"
        + (f"; <span class='bad'>{len(skipped)} skipped in the last run (below)</span>" if skipped else "")
        + ".</p>"
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
    if skipped:  # files the last run could not take as tiles (not in any section's report)
        out.append("<h2>Skipped in the last run</h2><ul>")
        out.extend(f"<li class='bad'>{e(msg)}</li>" for _, msg in sorted(skipped.items()))
        out.append("</ul>")
    out.append("<h2>Runs</h2><table><tr><th>run</th><th>started</th><th>tiles</th><th>failed</th>"
               "<th>seconds</th><th>throughput</th></tr>")
    out.extend(rates)
    out.append("</table></body></html>\n")
    _publish(journal.outdir / INDEX_HTML, "\n".join(out).encode())


def _prewarm() -> None:
    try:
        from PIL import Image, ImageDraw, ImageFont, PngImagePlugin  # noqa: F401

        Image.preinit()
        ImageFont.load_default()
    except Exception:  # noqa: BLE001 - only a head start; the real import reports errors
        pass


def prewarm_in_background() -> None:
    """Import the QC renderer's modules in a daemon thread, overlapping with the first tiles."""
    import threading

    threading.Thread(target=_prewarm, name="emdeblur-report-prewarm", daemon=True).start()


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
        self.index_dirty = False  # only the index changed (e.g. the files skipped in this run)
        self._last = time.monotonic()  # first regeneration one interval in (or at the end)
        self._flag = journal.get_meta("reports_clean", True) is False
        if self._flag:
            self.dirty.update(journal.sections())

    def mark(self, section: str) -> None:
        if not self._flag:
            self.journal.set_meta("reports_clean", False)
            self._flag = True
        self.dirty.add(section)

    @property
    def stale(self) -> bool:
        """Something the reports show changed since they were written."""
        return bool(self.dirty) or self.index_dirty

    def flush(self, force: bool = False, live: dict | None = None) -> bool:
        if not force and (not self.stale or time.monotonic() - self._last < self.interval):
            return False
        settings = self.journal.get_meta("settings", {})
        for s in sorted(self.dirty):
            write_section_report(self.journal, s, settings)
            self.dirty.discard(s)
        write_index(self.journal, live)
        self.index_dirty = False
        self._last = time.monotonic()
        if self._flag:
            self.journal.set_meta("reports_clean", True)
            self._flag = False
        return True

    def rebuild_all(self, live: dict | None = None) -> None:
        self.dirty.update(self.journal.sections())
        self.flush(force=True, live=live)
