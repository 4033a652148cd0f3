"""A two-VM DRBD 8.4 lab (mx1, mx2) under qemu/TCG, for tests on real kernels.

`python -m reconciler.lab up|provision|exec|cut|restore|status|down`; see
`reconciler.lab.lab` for what `up`/`down` build and remove, `reconciler.lab.provision`
for the one-time DRBD set-up, and `reconciler.lab.agent` for the control channel.
"""
