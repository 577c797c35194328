"""One compute service per server: embedding, ladder fits, the experiment, projections, for every visitor.

Every Voila visitor has a kernel of their own; the kernels hold widgets and figures only and send their
work here (:mod:`.client`), so models load once per server, UMAP compiles once per server, and identical
requests from a class are computed once. :mod:`.protocol` is the wire format (JSON headers and raw arrays,
never pickle), :mod:`.scheduler` the fair queue, :mod:`.server` the process, :mod:`.jobs` and
:mod:`.analysis` the work, :mod:`.results` the typed results a kernel draws.
"""
