"""``emdeblur score`` / ``watch`` with thresholds in px of blur on real EM: decisions, the CSV's blur
columns, empty tiles counted apart and never corrected, one-line errors for bad px values (NaN)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import tifffile

from napari_emdeblur.cli import main
from napari_emdeblur.deblur.train import degrade
from napari_emdeblur.io import load_section
from napari_emdeblur.qc import decisions as dec


def _tiles(shared_data) -> dict[str, np.ndarray]:
    """256 px tiles of held-out SBEM: sharp, 1.6 px and 4.5 px of added blur, and blank resin."""
    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "087.png").data)
    rng = np.random.default_rng(5)

    def blurred(t, sigma):
        return np.clip(np.round(degrade.blur(t.astype(np.float32) / 255, degrade.gaussian_psf(sigma)) * 255), 0,
                       255).astype(np.uint8)

    return {
        "ok": img[:256, :256].copy(),
        "correct": blurred(img[:256, 256:512], 1.6),
        "retake": blurred(img[256:512, :256], 4.5),
        "empty": np.clip(np.round(140 + 5 * rng.standard_normal((256, 256))), 0, 255).astype(np.uint8),
    }


def test_score_px_thresholds_csv_and_errors(shared_data, tmp_path, capsys):
    t = _tiles(shared_data)
    img = np.block([[t["ok"], t["correct"]], [t["retake"], t["empty"]]])
    path = tmp_path / "sec.tif"
    tifffile.imwrite(path, img)
    out = tmp_path / "r.csv"
    assert main(["score", str(path), "--correct-px", "1", "--retake-px", "3", "--csv", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "3 tiles" in line and "correct 1 (33.3%)" in line and "retake 1 (33.3%)" in line, line
    assert "empty 1 (25.0%)" in line and "correct>1 px retake>3 px" in line and "median blur" in line, line
    with open(out, newline="") as f:
        rows = {(r["row"], r["col"]): r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == list(dec.CSV_COLUMNS)
    assert [rows[k]["decision"] for k in (("0", "0"), ("0", "1"), ("1", "0"), ("1", "1"))] == \
        ["ok", "correct", "retake", "empty"]
    assert rows[("1", "1")]["empty_reason"] == "no_signal" and rows[("1", "1")]["score"] == ""
    assert 1.0 < float(rows[("0", "1")]["blur_px"]) < 3.0 and float(rows[("1", "0")]["blur_px"]) > 3.0
    for k in ("blur_major_px", "blur_minor_px", "blur_angle_deg", "total_blur_major_px", "noise"):
        assert rows[("0", "1")][k] != ""
    # a laxer px threshold lets the 1.6 px tile pass; whole tiles (--window full) give the same decisions here
    assert main(["score", str(path), "--correct-px", "2.5"]) == 0
    assert "correct 0 (0.0%), retake 1 (33.3%)" in capsys.readouterr().out
    assert main(["score", str(path), "--window", "full"]) == 0  # default px thresholds: 1 and 3 px
    assert "correct 1 (33.3%), retake 1 (33.3%), empty 1" in capsys.readouterr().out

    def err(argv) -> tuple[int, str]:
        rc = main(argv)
        e = capsys.readouterr().err.strip()
        return rc, e

    for bad in ("nan", "-1", "inf"):  # refused by the option's type: exit 2, one line naming the option
        rc, e = err(["score", str(path), "--correct-px", bad])
        assert rc == 2 and len(e.splitlines()) == 1 and "argument --correct-px" in e, e
    rc, e = err(["score", str(path), "--retake-px", "nan"])
    assert rc == 2 and "argument --retake-px" in e and len(e.splitlines()) == 1
    rc, e = err(["score", str(path), "--correct-px", "2", "--retake-px", "1"])
    assert rc == 1 and "must not be below" in e
    rc, e = err(["score", str(path), "--metric", "autocorr", "--correct-px", "1"])
    assert rc == 1 and "blur metric" in e
    rc, e = err(["score", str(path), "--correct-threshold", "nan"])
    assert rc == 2 and "argument --correct-threshold" in e and "finite" in e
    rc, e = err(["score", str(path), "--window", "big"])  # argparse: not a size, one line, exit 2
    assert rc == 2 and "argument --window" in e and len(e.splitlines()) == 1
    rc, e = err(["score", str(path), "--window", "100"])  # a size the blur map has no weights for
    assert rc == 2 and "must be 128, 160 or full" in e and len(e.splitlines()) == 1


def test_watch_px_thresholds_and_empty_tiles(shared_data, tmp_path, capsys):
    t = _tiles(shared_data)
    acq = tmp_path / "acq" / "sec1"
    acq.mkdir(parents=True)
    for name, tile in t.items():
        tifffile.imwrite(acq / f"{name}.tif", tile)
    out = tmp_path / "out"
    rc = main(["watch", str(tmp_path / "acq"), "--out", str(out), "--once", "--no-correct", "--stable-seconds", "0",
               "--correct-px", "1", "--retake-px", "3", "-q"])
    assert rc == 0
    summary = capsys.readouterr().out
    assert "1 empty" in summary and "1 to correct" in summary and "1 to retake" in summary, summary
    report = json.loads(next(Path(out).rglob("report.json")).read_text())
    by = {Path(r["name"]).stem: r for r in report["tiles"]}
    assert {k: by[k]["decision"] for k in t} == {k: k for k in t}
    assert report["summary"]["empty"] == 1 and report["summary"]["ok"] == 1
    rc = main(["watch", str(tmp_path / "acq"), "--out", str(tmp_path / "out2"), "--once", "--no-correct",
               "--correct-px", "nan"])
    e = capsys.readouterr().err.strip()
    assert rc == 2 and "argument --correct-px" in e and len(e.splitlines()) == 1
