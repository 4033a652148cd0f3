"""A two-VM DRBD 8.4 lab (mx1, mx2) under qemu/TCG, for tests on real kernels.

`python -m lab up|provision|exec|cut|restore|status|down`, from the checkout (the lab is a
tool of this repository, not part of the installed package); see `lab.lab` for what
`up`/`down` build and remove, `lab.provision` for the one-time DRBD set-up, and `lab.agent`
for the control channel.  The VMs see the host's root, so the checkout and its .venv have
the same paths inside them (also under /tmp or /run, which the guests mount afresh: they
are bound back there read-only, see `Layout.guest_keep`); `lab.drive` runs there with
`Layout.guest_env`.
"""
