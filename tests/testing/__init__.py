"""Tests of the testing toolkit: stepper, paths, coverage plugin, strategies, interop."""
