"""Computed tomography: DICOM/NIfTI volumes in Hounsfield units, windows, nodule patches, a synthetic
chest phantom, OrganMNIST3D, and CT encoders and SSL methods."""
