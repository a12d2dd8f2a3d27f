"""What the studies measure on networks, beside the library's core (nn, models, train).

- ``gsc``: gradient scale coefficients and pre-activation statistics of deep MLPs (Philipp et al. 2018),
  run through the layers' own forward and backward (``measure_batch``); ``gsc_synthetic``: the synthetic
  study's datasets, worker pool and accumulation; ``gsc_training``: the Trainer callbacks of the CIFAR-10
  part (GSC, effective depth and weight change by epoch; the paper's training-error learning-rate decay).
- ``effective_depth``: the gradient split by how many layers' changes since initialisation it passes
  through, and the effective depth it gives (the paper's Figure 3 D); the weight change ||W - W_0||_2.
- ``signal_variance``: the variance of the signal and of its gradient layer by layer at
  initialisation, against the rule n Var(w) c = 1 (Xavier, He), with the initialisation schemes compared.
- ``block_variance``: the batch variance of d loss / d (residual block output) per block, and the Trainer
  callback that probes it during training (the BN-in-residual-networks paper).
"""
