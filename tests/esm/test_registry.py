"""The model registry: one parser for a model list, and a table that asks for no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from revdistill.esm.models.registry import DEFAULT_LADDER, ESM2_MODELS, TINY_MODELS, get_spec, parse_models


@pytest.mark.parametrize("given, expected", [
    ("8M,35M,150M", ("8M", "35M", "150M")),
    (" 150M , 8M,35M ", ("8M", "35M", "150M")),
    ("esm2_t30_150M_UR50D,esm2_t6_8M_UR50D", ("8M", "150M")),
    (["tiny-64", "TINY-32", "tiny-48"], ("tiny-32", "tiny-48", "tiny-64")),
    (("15B",), ("15B",)),
    ("tiny-64,8M", ("tiny-64", "8M")),
])
def test_a_model_list_is_a_ladder_from_small_to_large(given, expected):
    assert parse_models(given) == expected


@pytest.mark.parametrize("given, message", [
    ("", r"^--models is empty: name at least one model"),
    (" , ", r"^--models is empty"),
    ([], r"^--models is empty"),
    ("8M,,35M", r"^--models='8M,,35M' has an empty item"),
    ("8M,35M,", r"has an empty item"),
    ("8M,9M", r"^unknown model '9M'; known models: 8M \(esm2_t6_8M_UR50D\)"),
    ("tiny-32,tiny-32", r"^--models='tiny-32,tiny-32' names \['tiny-32'\] more than once; give each model once"),
    ("8M,esm2_t6_8M_UR50D", r"names \['8M'\] more than once"),
    (["35M", "8m", "35M", "8M"], r"^--models=\['35M', '8m', '35M', '8M'\] names \['35M', '8M'\] more than once"),
])
def test_bad_model_lists_are_refused_naming_the_argument(given, message):
    with pytest.raises(ValueError, match=message):
        parse_models(given, "--models")


def test_the_table_is_ordered_and_the_default_ladder_is_in_it():
    for family in (ESM2_MODELS, TINY_MODELS):
        aliases = tuple(spec.alias for spec in family)
        assert parse_models(aliases) == aliases
    assert parse_models(DEFAULT_LADDER) == DEFAULT_LADDER
    assert all(get_spec(alias).trained for alias in DEFAULT_LADDER)


def test_asking_the_registry_and_the_weights_imports_no_torch():
    code = ("import sys\n"
            "from revdistill.esm.models.registry import parse_models\n"
            "from revdistill.esm.models.weights import weights_status\n"
            "from revdistill.esm.batching import embedded_residues\n"
            "import revdistill.io.files\n"
            "assert parse_models('8M,35M') == ('8M', '35M') and embedded_residues(2000) == 3066\n"
            "weights_status('/nonexistent')\n"
            "from revdistill.esm.models.weights import checkpoint_paths, weights_available\n"
            "weights_available('8M'), weights_available('tiny-32')\n"
            "default = checkpoint_paths('8M')[0].parent\n"
            "print(sorted(name for name in ('torch', 'esm', 'h5py', 'numba') if name in sys.modules))\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_the_default_weights_folder_is_torchs_without_importing_torch(monkeypatch, tmp_path):
    """The torch-free rule gives the folder torch itself would (fair-esm's cache), in the same environment."""
    monkeypatch.delenv("REVDISTILL_WEIGHTS", raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    code = ("import sys\n"
            "from revdistill.esm.models.weights import checkpoint_paths\n"
            "light = checkpoint_paths('8M')[0].parent\n"
            "assert 'torch' not in sys.modules\n"
            "import torch\n"
            "print(light == checkpoint_paths('8M')[0].parent, light)\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["True", str(tmp_path / "torch-home" / "hub" / "checkpoints")]


def test_what_needs_published_weights_refuses_the_tiny_family():
    assert parse_models("8M,35M", trained=True) == ("8M", "35M")
    assert get_spec("tiny-32").alias == "tiny-32"
    with pytest.raises(ValueError, match=r"^model 'tiny-32' is a random-init tiny model with no published weights; "
                                         r"choose from 8M, 35M, 150M, 650M, 3B, 15B$"):
        parse_models("8M,tiny-32", "models", trained=True)
    with pytest.raises(ValueError, match=r"^model 'tiny-48' is a random-init"):
        get_spec("TINY-48", trained=True)
