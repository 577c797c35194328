"""ESM-2 models, one responsibility per module, imported in one direction:

:mod:`~revdistill.esm.models.registry` (the table of specs and the one model-list parser; no torch)
<- :mod:`~revdistill.esm.models.weights` (checkpoint files: where, what is on disk, downloads)
<- :mod:`~revdistill.esm.models.loading` (building and loading the torch modules).

Nothing is imported here, so asking the registry does not import torch.
"""
