"""``kiln bench``: eager, torch.compile's modes and kiln's variants on every model of a zoo,
each system in a fresh process with fresh caches, measured alike and kept as store rows.

    cli.py        the command line (``kiln bench CONFIG ...``)
    run.py        the plan and the loop: one child process per (model, system), rows to the store
    resume.py     --resume: a run's earlier rows, the pairs done, the rows a report covers
    systems.py    the registry of systems: how each one turns a module into a callable
    child.py      what runs in the child: build, first result (cold), steady time, kernels
    timing.py     per-call times (CUDA events, else the host clock): median and quartiles
    bandwidth.py  device-to-device copy rate and per-kernel times (torch.profiler)
    inductor.py   torch.compile's modes, and how many kernels Inductor generated
    tuned.py      kiln's kernels tuned in the child (neighbours of the default, or a sweep)
    report.py     the markdown report; plots.py its PNG charts (matplotlib, the ``plot`` extra)
"""
