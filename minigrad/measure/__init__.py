"""What the studies measure on networks, beside the library's core (nn, models, train).

- ``gsc``: gradient scale coefficients and pre-activation statistics of deep MLPs (Philipp et al. 2018),
  run through the layers' own forward and backward (``measure_batch``).
- ``signal_variance``: the variance of the signal and of its gradient layer by layer at
  initialisation, against the rule n Var(w) c = 1 (Xavier, He), with the initialisation schemes compared.
- ``block_variance``: the batch variance of d loss / d (residual block output) per block, and the Trainer
  callback that probes it during training (the BN-in-residual-networks paper).
"""
