"""Model definitions built from minigrad.nn."""
