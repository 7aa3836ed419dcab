"""Characterization campaigns and the per-target optimization search (issue #19)."""
