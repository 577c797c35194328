"""ProteinGym v1.3 substitution assays: the reference file and catalogue, data location and downloads (whole
files or one assay out of the remote zips), mutants, folds."""
from revdistill.proteingym.assays import MIN_VARIANTS, Assay, read_assay
from revdistill.proteingym.catalog import assay_catalog, filter_catalog, format_catalog
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
    local_assay_ids,
    packaged_reference_path,
    resolve_data_dir,
    suggest_assays,
)
from revdistill.proteingym.folds import N_FOLDS, SCHEMES, generate_folds
from revdistill.proteingym.mutants import apply_mutant, check_mutants, mutant_positions, parse_mutant
from revdistill.proteingym.remote import PROTEINGYM_URL_ENV, fetch_assay

__all__ = [
    "Assay", "BASE_URL", "ENV_VAR", "MIN_VARIANTS", "N_FOLDS", "PROTEINGYM_FILES", "PROTEINGYM_URL_ENV",
    "REFERENCE_COLUMNS", "SCHEMES", "UnknownAssayError", "apply_mutant", "assay_catalog", "check_mutants",
    "default_cache_dir", "download_proteingym", "fetch_assay", "filter_catalog", "find_assay_csv",
    "format_catalog", "generate_folds", "list_assays", "load_reference", "local_assay_ids", "mutant_positions",
    "packaged_reference_path", "parse_mutant", "read_assay", "resolve_data_dir", "suggest_assays",
]
