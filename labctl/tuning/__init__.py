"""Tuning profiles with exact restore: ``labctl tune`` and ``labctl teardown``.

- :mod:`~labctl.tuning.catalog`   the knobs, their kinds, allowed values and order constraints
- :mod:`~labctl.tuning.profiles`  validated profile YAML with ``include``
- :mod:`~labctl.tuning.plan`      apply/restore order, drift (pure)
- :mod:`~labctl.tuning.snapshot`  the ``tuning`` state schema, first-original-wins, manifest view
- :mod:`~labctl.tuning.tune`      read -> store snapshot -> apply (-> roll back), show/verify
- :mod:`~labctl.tuning.teardown`  restore everything recorded, from local state alone

The host side is one Ansible module, ``roles/knobs/library/labctl_knobs.py``.
"""

from labctl.tuning.profiles import Profile, load_profile
from labctl.tuning.snapshot import snapshot_for_manifest

__all__ = ["Profile", "load_profile", "snapshot_for_manifest"]
