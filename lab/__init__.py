"""A two-VM DRBD 8.4 lab (mx1, mx2) under qemu/TCG, for tests on real kernels.

`python -m lab up|provision|exec|cut|restore|status|down`; see
`lab.lab` for what `up`/`down` build and remove, `lab.provision`
for the one-time DRBD set-up, and `lab.agent` for the control channel.
"""
