"""ESM-2: sequences -> embeddings, stored.

- :mod:`revdistill.esm.models`: the model registry, weight files and loading;
- the engine: :mod:`~revdistill.esm.batching` (planning forward rows, long-sequence windows),
  :mod:`~revdistill.esm.forward` (forward passes), :mod:`~revdistill.esm.embed` (the ladder embedder),
  :mod:`~revdistill.esm.runner` (embedding records into a store);
- the store: :mod:`~revdistill.esm.store` (storage only) with :mod:`~revdistill.esm._hdf5` and
  :mod:`~revdistill.esm._parts`; :mod:`~revdistill.esm.sequences` reads and checks protein records;
- :mod:`~revdistill.esm.interfaces`: the typed interfaces (``typing.Protocol``) of the store and the embedder.

Heavy imports (torch, fair-esm, h5py) happen in the sub-modules, not here.
"""
