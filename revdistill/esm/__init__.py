"""ESM-2: the model registry and loading, forward passes, the ladder embedder and the embedding store.

Heavy imports (torch, fair-esm, h5py) happen in the sub-modules, not here.
"""
