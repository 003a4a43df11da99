"""Dataset layouts, validation, label semantics, transforms and the embedded phantom data."""

from .acdc import ACDC_GROUPS, ACDC_LABELS, discover_acdc, read_info_cfg
from .cases import load_cases, load_image_cases, path_list
from .errors import DatasetError
from .labels import EMIDEC_LABELS, channel_masks, check_label_semantics, class_values, flatten_channels, label_meaning
from .layouts import dataset_labels, detect_layout, discover, discover_emidec, read_datalist
from .medmnist import (
    find_npz,
    medmnist_records,
    read_labelled_images,
    read_medmnist_split,
    stratified_fraction,
    write_medmnist_npz,
)
from .pathology_patches import (
    LesionPatch,
    cut_lesion_patches,
    gaussian_window,
    place_patch,
    prepare_patch,
    random_centre,
    random_pose,
)
from .slice_classes import (
    class_image_records,
    lesion_slice_classes,
    unit_slices,
    volume_slice_records,
    write_lesion_slices,
)
from .splits import kfold_by_case, split_by_case, stratified_subset, write_kfold, write_split
from .validation import validate_cases, validate_images
