"""OCTA and retina: OCTA-500 and image-folder readers, synthetic OCTA, vessel priors, VAMAE and MAE segmentation."""
