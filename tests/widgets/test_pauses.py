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


def test_summary_keeps_the_longest_pauses_in_time_order(qtbot):
    """The kept long pauses are the longest ones (not the first ones), listed in time order; pause
    sites additionally keep every pause over ``all_over_ms``."""
    probe = PauseProbe(10, log_over_ms=100, stacks=True)
    pauses = [(0.1, 150.0), (0.5, 400.0), (0.9, 120.0), (1.3, 300.0), (1.7, 250.0)]
    probe.gaps = [10.0 + ms for _, ms in pauses] + [10.0] * 20
    probe.long_pauses = list(pauses)
    probe.pause_sites = [(t, ms, [("f", 1)]) for t, ms in pauses]
    s = probe.summary(keep=2)
    assert s["long_pauses"] == [(0.5, 400.0), (1.3, 300.0)]
    assert [p[:2] for p in s["pause_sites"]] == [(0.5, 400.0), (1.3, 300.0)]
    assert s["pauses_over_200ms"] == 3 and s["longest_pause_ms"] == 400.0
    s = probe.summary(keep=2, all_over_ms=200)
    assert [p[1] for p in s["pause_sites"]] == [400.0, 300.0, 250.0]
