"""Deblurring networks: :mod:`.gran` (GRAN), :mod:`.sbgran` (semi-blind GRAN, with the Wiener
candidates of :mod:`.wiener`) and :mod:`.unet` (the U-Net baseline).
"""
