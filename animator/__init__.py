"""Audio to FLAME parameters: speech model, disentangled blendshapes, emotions, training data."""
