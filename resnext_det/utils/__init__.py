"""Helpers without a room of their own: atomic writes (io), prediction pictures
(visualize), loss/AP curves (plots) and the comparisons that tests and benchmarks share
(testing: relative error, random norm statistics, detections matched as sets). Import
the submodule you need: plots and visualize pull in matplotlib, which the rest of the
package does not need."""
