"""Label vocabularies shared by the data sources, the phantoms and zero-shot prompts."""

# The 14 CheXpert observations (Irvin et al., 2019), as MIMIC-CXR-JPG's chexpert CSV names them.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
