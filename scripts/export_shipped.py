"""Ship the best validated semi-blind GRAN (and the equal-budget ablation pair) with a complete card.

Usage (from the repository root, after ``bash scripts/train_shipped.sh sbgran [--resume]``)::

    .venv/bin/python scripts/export_shipped.py                 # model_best -> shipped sbgran_em_v2
    .venv/bin/python scripts/export_shipped.py --ablation 3000 # + benchmarks/weights/sbgran_{equal_budget,nograph}.pt

``export_weights`` re-checks the weights and re-writes the card for the new name; this script adds what
the training loop cannot know: the licence of every training folder (from each folder's PROVENANCE.md,
summarised) and the stages of the run (one per working session that resumed it), with the total steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: the training folders' terms, as stated in each folder's PROVENANCE.md (paths relative to the data root)
LICENCES = {
    "isbi2012_sstem": "no separate data licence stated by the source; Cardona-lab ssTEM terms: research / "
                      "non-commercial use with attribution (Cardona et al., PLoS Biol. 2010)",
    "drosophila_vnc_sstem": "CC BY-NC-SA 3.0 (cite the figshare record named in PROVENANCE.md)",
    "sbem_rodent_cdeep3m": "UC Regents licence of CDeep3M: educational, research and non-profit use with the notice "
                           "kept; commercial use needs UC San Diego's permission (Haberl et al., Nat. Methods 2018)",
    "neuroproof_fibsem": "CC BY 3.0 (Janelia FlyEM NeuroProof examples)",
}

#: one entry per stretch of training that resumed the same run (steps are cumulative)
STAGES = [
    {"steps": [0, 4000], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 1,
     "note": "from scratch; the interim weights of step 1500 were shipped first"},
    {"steps": [4000, 7500], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 2,
     "note": "resumed from the committed checkpoint (exact optimiser, schedule and RNG state); "
             "step 5500 was shipped at the end of that session"},
    {"steps": [7500, 16500], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 3,
     "note": "resumed from the committed checkpoint; step 11,500 was shipped in that session"},
    {"steps": [16500, 41500], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 4,
     "note": "resumed from the committed checkpoint (the same schedule, losses identical to the interrupted run); "
             "continued to 41,500 at the start of session 5; step 30,500 was shipped in session 4"},
    {"steps": [41500, 55500], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 5,
     "note": "annealing: resumed from the committed checkpoint with --steps 56000, the cosine schedule over the "
             "new total (lr 3.7e-4 -> 8.6e-5 at the resume, decaying to lr_min 1e-5 at 56,000); stopped at 55,500"},
    {"steps": [55500, 69500], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 6,
     "note": "MSE fine-tuning (the benchmark's PSNR is an MSE): resumed from the committed checkpoint with "
             "--loss mse --lr 1e-3 --steps 72000, the cosine over the new total (a warm restart to lr 1.3e-4 at "
             "the resume, decaying to lr_min 1e-5 at 72,000); stopped at 69,500"},
    {"steps": [69500, None], "where": "CPU, 1 torch thread, shared 2-core machine", "session": 7,
     "note": "larger crops: resumed from the committed checkpoint with --crop 192 --loss mse --lr 2e-3 --steps 78000 "
             "(a short warm restart to lr 6.7e-5 at the resume, decaying to lr_min 1e-5 at 78,000); stopped at 77,000"},
]


def main(argv=None) -> int:
    from napari_emdeblur.deblur.shipped import SHIPPED_NAME, shipped_weights_path
    from napari_emdeblur.deblur.weights import export_weights, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="training/sbgran_v2")
    ap.add_argument("--ablation-run", default="training/sbgran_v2_nograph")
    ap.add_argument("--ablation", type=int, metavar="STEP", help="also export both runs' snapshots at STEP")
    ap.add_argument("--no-ship", action="store_true", help="only the ablation pair")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # every path the cards record is relative to the repository
    run = Path(args.run)
    if not args.no_ship:
        _, card = load_model(run / "model_best.pt", device="cpu")
        best = int(card["training"]["steps"])
        import torch

        total = int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["step"])
        stages = [dict(s) for s in STAGES]
        stages[-1]["steps"] = [stages[-1]["steps"][0], total]
        new = export_weights(run / "model_best.pt", shipped_weights_path(), name=SHIPPED_NAME,
                             licences=LICENCES, stages=stages, total_steps=total, best_step=best,
                             exported_from_run=args.run)
        print(f"shipped {SHIPPED_NAME}: best step {best} of {total}, val PSNR {new['validation']['psnr']:.2f} dB")
    if args.ablation:
        n = args.ablation
        for src, dst in ((run, "sbgran_equal_budget.pt"), (args.ablation_run, "sbgran_nograph.pt")):
            snap = Path(src) / f"model_step{n}.pt"
            extra = {}
            stages = json.loads(snap.with_suffix(".json").read_text()).get("stages")
            if stages:  # a snapshot of a run exported before: its stages only up to the snapshot's step
                extra["stages"] = [dict(st, steps=[st["steps"][0], n if st["steps"][1] is None else min(st["steps"][1], n)])
                                   for st in stages if st["steps"][0] < n]
                extra["total_steps"] = n
            export_weights(snap, Path("benchmarks") / "weights" / dst, licences=LICENCES,
                           ablation_step=n, name=Path(dst).stem, **extra)  # not the shipped model's name
            print(f"{snap} -> benchmarks/weights/{dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
