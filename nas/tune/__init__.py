"""Ray Tune sweeps (``nas tune``; the optional extra ``[tune]``). Import ``nas.tune.sweep`` to run one."""
