"""Serving: the artifact loader and Predictor (numpy + onnxruntime only)."""
