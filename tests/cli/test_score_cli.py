"""``emdeblur score``: sections and stacks end to end, bad-input exit codes, and a MultiSEM folder
(one row per acquisition tile file, flagged files named)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from conftest import synthetic_section

from napari_emdeblur.cli import main
from napari_emdeblur.qc import decisions as dec


def test_score_mosaic_one_row_per_file(msem_section, tmp_path, capsys):
    folder, man = msem_section
    out = tmp_path / "qc.csv"
    assert main(["score", str(folder), "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    blurred = [Path(b["file"]).name for b in man["blurred"]]
    assert f"{man['n_tiles']} acquisition tiles" in text and all(b in text for b in blurred)
    assert "median blur" in text and "correct>1 px retake>3 px" in text and "empty 0" in text  # blur metric: px
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == man["n_tiles"] and {r["level"] for r in rows} == {"file"}
    assert all(r["blur_px"] for r in rows) and {r["empty_reason"] for r in rows} == {""}
    assert len({r["file"] for r in rows}) == man["n_tiles"] and all(Path(r["file"]).is_file() for r in rows)
    flagged = {Path(r["file"]).name for r in rows if r["decision"] in ("correct", "retake")}
    assert flagged == set(blurred)
    # with the sub-tile rows; never over an existing report without --overwrite
    assert main(["score", str(folder), "--csv", str(out), "--subtiles"]) != 0
    assert main(["score", str(folder), "--csv", str(out), "--subtiles", "--overwrite"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sum(r["level"] == "file" for r in rows) == man["n_tiles"]
    assert sum(r["level"] == "subtile" for r in rows) == man["n_tiles"] * 6  # 2 x 3 sub-tiles of 256 px


def test_cli_score_end_to_end(tmp_path, capsys):
    img = synthetic_section(seed=5, soft=[(0, 2)], retake=[(2, 4)])
    path = tmp_path / "sec.tif"
    tifffile.imwrite(path, img)
    stack_path = tmp_path / "stack.tif"
    tifffile.imwrite(stack_path, np.stack([img, synthetic_section(seed=6)]))
    out = tmp_path / "report.csv"
    # section-relative thresholds of autocorr on a synthetic texture (the blur metric: test_blurmap.py)
    rc = main(["score", str(path), str(stack_path), "--tile", "128", "--csv", str(out), "--metric", "autocorr"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5  # 1 + 2 sections, total, "wrote"
    assert "24 tiles" in lines[0] and "retake 1 (4.2%)" in lines[0] and "correct 1 (4.2%)" in lines[0], lines[0]
    assert "z=1" in lines[2] and lines[3].startswith("total: 72 tiles")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 72 and list(rows[0]) == list(dec.CSV_COLUMNS)
    by = {(r["file"].endswith("sec.tif"), r["row"], r["col"]): r["decision"] for r in rows if r["section"] == "0"}
    assert by[(True, "0", "2")] == "correct" and by[(True, "2", "4")] == "retake"
    assert sum(r["decision"] != "ok" for r in rows if r["file"].endswith("sec.tif")) == 2

    # explicit thresholds: everything below 1e9 is flagged for correction
    rc = main(["score", str(path), "--tile", "128", "--correct-threshold", "1e9", "--retake-threshold", "-1",
               "--metric", "autocorr"])
    assert rc == 0 and "correct 24 (100.0%)" in capsys.readouterr().out


def test_cli_score_bad_input_exit_codes(tmp_path, capsys):
    img = synthetic_section(shape=(256, 256), seed=7)
    path = tmp_path / "sec.tif"
    tifffile.imwrite(path, img)
    out = tmp_path / "r.csv"
    out.write_text("keep me\n")

    def err(argv) -> tuple[int, str]:
        rc = main(argv)
        e = capsys.readouterr().err.strip()
        return rc, e

    rc, e = err(["score", str(path), "--csv", str(out)])
    assert rc != 0 and "already exists" in e and len(e.splitlines()) == 1
    rc, e = err(["score", str(path), "--csv", str(tmp_path)])  # a folder: said so (not "use --overwrite")
    assert rc != 0 and "is a folder" in e and "overwrite" not in e
    rc, e = err(["score", str(path), str(tmp_path / "missing.tif"), "--csv", str(tmp_path / "new.csv")])
    assert rc != 0 and "missing.tif: no such file" in e and len(e.splitlines()) == 1  # before scoring sec.tif
    assert not (tmp_path / "new.csv").exists()
    assert out.read_text() == "keep me\n"
    rc = main(["score", str(path), "--csv", str(out), "--overwrite", "--tile", "128"])
    assert rc == 0 and out.read_text().startswith("file,section,row,col")
    capsys.readouterr()

    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a tiff")
    rc, e = err(["score", str(bad)])
    assert rc != 0 and "broken.tif" in e and len(e.splitlines()) == 1
    rc, e = err(["score", str(tmp_path / "missing.tif")])
    assert rc != 0 and "missing.tif" in e
    rc, e = err(["score", str(path), "--correct-threshold", "0.1", "--retake-threshold", "0.2"])
    assert rc != 0 and "must not exceed" in e
    rc, e = err(["score", str(path), "--csv", str(tmp_path / "no" / "r.csv")])
    assert rc != 0 and "does not exist" in e
    rc, e = err(["score", str(path), "--tile", "4"])
    assert rc != 0 and "tile" in e
    rc, e = err(["score", str(path), "--metric", "nope"])  # argparse: one line naming the option, exit 2
    assert rc == 2 and "argument --metric" in e and len(e.splitlines()) == 1
