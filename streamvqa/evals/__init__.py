"""Accuracy evaluations of the grounded default model: single-frame QA and streaming needle QA."""
