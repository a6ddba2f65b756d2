"""Sub-commands of the ``mllmrec`` command (see :mod:`mllmrec_pyg.cli`)."""
