"""radalign.data: where the pairs come from — MIMIC-CXR (DICOM and JPG), IU X-ray and manifest
sources, records, the report sectioner, patient-disjoint splits, the data check, and the
synthetic phantoms (:mod:`radalign.data.synth`). Imports only :mod:`radalign.encoders`;
pretrain, retrieval and zeroshot may import it."""
