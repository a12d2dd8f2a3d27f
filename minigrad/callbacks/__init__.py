"""Trainer callbacks that watch a run: a live view for notebooks, TensorBoard event files, step-wise curves.

- ``LivePlot`` (``minigrad.callbacks.live``): loss/accuracy curves and gradient flow, redrawn in place in a
  Jupyter notebook (a PNG file elsewhere). Needs matplotlib (and IPython in a notebook).
- ``TensorBoard`` (``minigrad.callbacks.tensorboard``): scalars and gradient histograms for TensorBoard,
  written with tensorboardX (``pip install -e ".[tensorboard]"``).
- ``StepCurve`` (``minigrad.callbacks.curve``): training and validation (or test) loss and error every few
  optimiser steps, as papers plot them against iterations; a CSV file, kept across resumes.

Importing this package imports neither matplotlib, IPython nor tensorboardX: each is imported when a
callback is created or draws (DECISIONS 27).
"""
from .curve import StepCurve
from .live import LivePlot
from .tensorboard import TensorBoard

__all__ = ["LivePlot", "StepCurve", "TensorBoard"]
