"""Views of experiment results: 2-D projections (PCA, UMAP) and plotly figures. plotly/umap load lazily."""
