"""ProteinGym v1.3 substitution assays: the reference file, data location and download, mutants, folds."""
from revdistill.proteingym.assays import MIN_VARIANTS, Assay, read_assay
from revdistill.proteingym.data import (
    BASE_URL,
    ENV_VAR,
    PROTEINGYM_FILES,
    REFERENCE_COLUMNS,
    UnknownAssayError,
    default_cache_dir,
    download_proteingym,
    find_assay_csv,
    list_assays,
    load_reference,
    resolve_data_dir,
    suggest_assays,
)
from revdistill.proteingym.folds import N_FOLDS, SCHEMES, generate_folds
from revdistill.proteingym.mutants import apply_mutant, check_mutants, mutant_positions, parse_mutant

__all__ = [
    "Assay", "BASE_URL", "ENV_VAR", "MIN_VARIANTS", "N_FOLDS", "PROTEINGYM_FILES", "REFERENCE_COLUMNS", "SCHEMES",
    "UnknownAssayError", "apply_mutant", "check_mutants", "default_cache_dir", "download_proteingym",
    "find_assay_csv", "generate_folds", "list_assays", "load_reference", "mutant_positions", "parse_mutant",
    "read_assay", "resolve_data_dir", "suggest_assays",
]
