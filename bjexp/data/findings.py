"""Finding vocabulary shared by both worlds: torchxrayvision pathology names (CheXpert 'Pleural Effusion' -> 'Effusion')."""
from __future__ import annotations

# The five findings the miniature world renders; also the default evaluation set for real data
# (the most prevalent CheXpert findings among PA follow-ups, in xrv naming).
SYNTHETIC_FINDINGS = ("Effusion", "Cardiomegaly", "Consolidation", "Edema", "Pneumothorax")

# CheXpert / MIMIC-CXR label columns -> canonical (xrv) names.
CHEXPERT_TO_CANONICAL = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum",
    "Fracture": "Fracture",
    "Lung Lesion": "Lung Lesion",
    "Lung Opacity": "Lung Opacity",
    "No Finding": "No Finding",
    "Pleural Effusion": "Effusion",
    "Pleural Other": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Support Devices": "Support Devices",
}

# Human wording used by describers.
PHRASE = {
    "Effusion": "pleural effusion",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Pneumothorax": "pneumothorax",
    "Atelectasis": "atelectasis",
    "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
    "Fracture": "fracture",
    "Lung Lesion": "lung lesion",
    "Lung Opacity": "lung opacity",
    "Pleural Other": "pleural abnormality",
    "Pneumonia": "pneumonia",
    "Support Devices": "support devices",
}
# Findings with a side (left/right/bilateral); the others are single midline/diffuse findings.
LATERAL = {"Effusion", "Consolidation", "Pneumothorax", "Atelectasis", "Lung Opacity", "Pneumonia"}
SEVERITY_WORDS = {1: "small", 2: "moderate", 3: "large"}
