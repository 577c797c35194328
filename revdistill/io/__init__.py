"""The foundation every layer stands on, one home each: :mod:`~revdistill.io.paths` (cache folders),
:mod:`~revdistill.io.files` (pickle-free npz files, atomic writes, locks, file digests) and
:mod:`~revdistill.io.download` (HTTP downloads: the one place revdistill touches the network).

Nothing is imported here, so ``import revdistill.io.files`` does not pull in the HTTP stack.
"""
