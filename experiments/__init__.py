"""Thin `python -m experiments.<study>` entry points: config -> model -> trainer -> report."""
