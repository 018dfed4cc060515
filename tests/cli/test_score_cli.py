"""``emdeblur score`` on a MultiSEM folder: one row per acquisition tile file, flagged files named."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_emdeblur.cli import main


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
