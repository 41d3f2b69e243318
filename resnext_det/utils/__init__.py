"""Helpers without a room of their own: atomic writes (io), prediction pictures
(visualize) and loss/AP curves (plots). Import the submodule you need: plots and
visualize pull in matplotlib, which the rest of the package does not need."""
