"""Focus quality control: pure numpy/scipy (no torch, no Qt)."""
