"""Dataset layouts, validation, label semantics, transforms and the embedded phantom data.

No re-exports: import from the defining module (``pathosynth.data.cases.load_cases``), so a bundle that reads cases
does not import, or ship, the MedMNIST, slice-class or pathology-patch modules.
"""
