"""Correction reports: valid JSON (no NaN tokens) and one encoding of missing values."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from napari_emdeblur.deblur.reports import TileReport, write_reports


def _strict(text: str):
    def no_constants(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def test_missing_values_are_null_in_json_and_empty_in_csv(tmp_path):
    reps = [TileReport(0, 1, 2, 256, 512, 256, 256, score_before=2.5, corrected=True),  # no PSNR, no blur
            TileReport(0, 1, 3, 256, 768, 256, 256, score_before=np.float32(1.5), psnr_after=31.25, accepted=True)]
    meta = {"value_range": np.array([0.0, 255.0]), "fidelity_limit": math.nan, "device": "cpu"}
    csv_path, json_path = write_reports(tmp_path / "out.ome.tif", reps, meta)
    doc = _strict(json_path.read_text())  # a strict parser (jq, JavaScript) reads it
    t0, t1 = doc["tiles"]
    assert t0["psnr_after"] is None and t0["blur_major"] is None and t0["accepted"] is None
    assert t1["psnr_after"] == 31.25 and t1["score_before"] == 1.5 and t1["accepted"] is True
    assert doc["meta"] == {"value_range": [0.0, 255.0], "fidelity_limit": None, "device": "cpu"}
    rows = list(csv.DictReader(csv_path.open()))
    assert rows[0]["psnr_after"] == "" and rows[0]["accepted"] == "" and rows[0]["score_before"] == "2.5"
    assert rows[1]["psnr_after"] == "31.25" and rows[1]["accepted"] == "True"
