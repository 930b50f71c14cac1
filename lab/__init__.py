"""The lab: what tools/demo.py and the benchmarks share to run experiments; not part of the package.

The steps of an experiment as command lines (:mod:`lab.experiment`: data, configs, training,
proposal dumps, one process each, run from the checkout's root) and the read-back of their results
into tables; error analysis of the detections (:mod:`lab.analysis`). tools/demo.py and the
benchmarks import it as ``lab`` (the checkout's root is on their ``sys.path`` already, for
``sniper_d2``). It runs the checkout's tools and train_net.py by path, so it lives in the checkout:
``pip install .`` installs ``sniper_d2`` without it.
"""
