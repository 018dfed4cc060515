"""The UI-pause probe the benchmarks report with: it measures a known block of the GUI thread and,
with ``stacks``, names the code the block was spent in."""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer

from napari_emdeblur.widgets.pauses import PauseProbe, run_loop_for, stack_site


def _busy_block(seconds: float) -> None:
    """Hold the GUI thread (in Python, so a sampler can see where)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_probe_measures_a_block_and_names_where_it_was_spent(qtbot):
    probe = PauseProbe(10, log_over_ms=100, stacks=True)
    probe.start()
    QTimer.singleShot(100, lambda: _busy_block(0.35))
    run_loop_for(0.8)
    longest = probe.stop()
    assert 300 <= longest < 1000, longest
    assert probe.over(200) == 1 and len(probe.long_pauses) == 1
    (start, ms, sites), = probe.pause_sites
    assert ms == probe.long_pauses[0][1] and 0.05 < start < 0.3
    assert sites and "_busy_block" in sites[0][0], sites  # the most sampled site is the block
    assert sites[0][1] >= 5  # sampled every 20 ms during ~350 ms
    summ = probe.summary()
    assert summ["pauses_over_200ms"] == 1 and summ["pause_sites"][0][1] == ms
    # a quiet loop: no long pause, nothing sampled
    probe.start()
    run_loop_for(0.3)
    assert probe.stop() < 100 and not probe.pause_sites


def test_stack_site_names_the_innermost_frames_and_this_package():
    import sys

    site = stack_site(sys._current_frames()[__import__("threading").get_ident()], depth=2)
    assert site.split(" < ")[0].startswith(f"{__name__}:test_stack_site_names_the_innermost_frames_and_this_package:")
