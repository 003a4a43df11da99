"""Lesion masks: DiffMask post-processing inside the anatomy (M_m), MI ⊃ PMO containment, label maps <-> masks,
and realism statistics comparing real and generated masks.

No re-exports: import from the defining module (``pathosynth.masks.postprocess.postprocess_lesion_masks``).
"""
