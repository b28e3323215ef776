"""A volume with its geometry: the common currency of the NIfTI and DICOM readers and the
MRI/CT preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    """array: (X, Y, Z) or (C, X, Y, Z) float32, voxel axes in the order the affine maps;
    affine: (4, 4) float64, voxel index (i, j, k, 1) -> world millimetres in RAS+ (NIfTI convention;
    DICOM's LPS is converted on reading); meta: reader-specific facts that are not identities
    (sequence, modality, vendor, field strength...). Never patient names or IDs."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[-3:])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each voxel axis (lengths of the affine's columns)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
