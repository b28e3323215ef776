"""Volumes and images shared by the MRI, CT and retina modalities."""
