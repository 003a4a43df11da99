"""Text prompts from dataset metadata (EMIT-Diff Sec. 4.2, 4.4).

EMIT-Diff builds "free" training prompts as a triplet "modality, organ, category" ("CT, Abdomen, Arterial
Pathology") and, when synthesising for augmentation, appends an augmentation text c_aug such as "enhanced
contrast" or "high resolution". Our datasets say the category per case: the ACDC ``Info.cfg`` Group (NOR,
DCM, ...) and the EMIDEC case name (normal / pathological). The group -> readable category map, the modality
and the organ are config keys, so another dataset only needs another map, not code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

# ACDC diagnostic groups (Bernard et al. 2018) and EMIDEC groups (every EMIDEC pathological case is an infarct).
ACDC_CATEGORIES = {
    "NOR": "normal",
    "DCM": "dilated cardiomyopathy",
    "HCM": "hypertrophic cardiomyopathy",
    "MINF": "myocardial infarction",
    "RV": "abnormal right ventricle",
}
EMIDEC_CATEGORIES = {"normal": "normal", "pathological": "myocardial infarction"}
CARDIAC_CATEGORIES = {**ACDC_CATEGORIES, **EMIDEC_CATEGORIES}
AUGMENTATION_PHRASES = ("enhanced contrast", "high resolution")  # the two the paper names (Sec. 4.4)
SEPARATOR = ", "


def join_prompt(*parts: str) -> str:
    """Parts joined the way the paper writes its triplets ("MRI, heart, normal"); empty parts are dropped."""
    return SEPARATOR.join(p.strip() for p in parts if p and p.strip())


class CasePrompts:
    """The prompt of a case record: "modality, organ, category", the category looked up from the record's group.

    Args:
        modality: e.g. "MRI" (the paper writes "MR" or "CT").
        organ: e.g. "heart".
        categories: record ``group`` -> category text (ACDC "MINF" -> "myocardial infarction").
        default_category: category of records without a group (a user's datalist); None = such a record is an error.
    """

    def __init__(
        self,
        modality: str = "MRI",
        organ: str = "heart",
        categories: Mapping[str, str] | None = None,
        default_category: str | None = None,
    ) -> None:
        self.modality = str(modality)
        self.organ = str(organ)
        self.categories = dict(CARDIAC_CATEGORIES if categories is None else categories)
        self.default_category = default_category

    def category(self, record: Mapping) -> str:
        group = record.get("group")
        if group is None:
            if self.default_category is None:
                raise ValueError(
                    f"case {record.get('case_id')} ({record.get('image')}) has no group to build its prompt from; "
                    "set default_category or give datalist entries a 'group'"
                )
            return str(self.default_category)
        if group not in self.categories:
            raise ValueError(
                f"case {record.get('case_id')} ({record.get('image')}) has group {group!r}, which the "
                f"'categories' map does not name (known groups: {sorted(self.categories)})"
            )
        return self.categories[group]

    def __call__(self, record: Mapping) -> str:
        return join_prompt(self.modality, self.organ, self.category(record))

    def settings(self) -> dict:
        return {
            "modality": self.modality,
            "organ": self.organ,
            "categories": self.categories,
            "default_category": self.default_category,
        }


def with_prompts(cases: Sequence[Mapping], prompts: CasePrompts) -> list[dict]:
    """The case records with a ``prompt`` key each (all prompts are built here, so a bad group fails before
    training)."""
    return [{**case, "prompt": prompts(case)} for case in cases]


def augmented_prompt(prompt: str, phrases: Sequence[str], generator: torch.Generator | None = None) -> tuple[str, str]:
    """(prompt + one augmentation phrase drawn with ``generator``, the phrase); no phrases -> (prompt, "")."""
    phrases = list(phrases)
    if not phrases:
        return prompt, ""
    phrase = phrases[int(torch.randint(len(phrases), (1,), generator=generator))]
    return join_prompt(prompt, phrase), phrase
