"""Brain MRI: NIfTI readers, the FOMO60K and FOMO25 task layouts, preprocessing into the array cache,
synthetic brain phantoms, encoders and SSL methods (Munk et al., FOMO25)."""
