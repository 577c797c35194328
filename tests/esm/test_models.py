"""ESM-2 model table, loading from fair-esm checkpoint files, and the tiny untrained family."""
from __future__ import annotations

import argparse

import esm
import pytest
import torch

from revdistill.esm.forward import stock_forward
from revdistill.esm.models.loading import load_esm2, save_esm2_checkpoint, tiny_esm2, tiny_ladder
from revdistill.esm.models.registry import ESM2_MODELS, TINY_MODELS, get_spec
from revdistill.esm.models.weights import checkpoint_paths, weights_available


def _tokens(alphabet, sequence: str = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDK") -> torch.Tensor:
    return alphabet.get_batch_converter()([("x", sequence)])[2]


def test_table_matches_fair_esm_names_and_sizes():
    aliases = [spec.alias for spec in ESM2_MODELS]
    assert aliases == ["8M", "35M", "150M", "650M", "3B", "15B"]
    for spec in ESM2_MODELS:
        assert hasattr(esm.pretrained, spec.name), spec.name  # fair-esm has a loader of that name
        assert f"_t{spec.layers}_" in spec.name
        assert spec.dim % spec.heads == 0
    assert get_spec("650M") == get_spec("esm2_t33_650M_UR50D")
    assert (get_spec("15B").layers, get_spec("15B").dim, get_spec("15B").heads) == (48, 5120, 40)
    assert all(not spec.trained for spec in TINY_MODELS)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model '42M'.*8M \(esm2_t6_8M_UR50D\)"):
        get_spec("42M")


def test_tiny_models_are_seeded_untrained_fair_esm_modules():
    state = torch.random.get_rng_state()
    first, alphabet = tiny_esm2(2, 32, 4, seed=7)
    second, _ = tiny_esm2(2, 32, 4, seed=7)
    other, _ = tiny_esm2(2, 32, 4, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert isinstance(first, esm.model.esm2.ESM2) and first.untrained
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
    assert not torch.equal(first.layers[0].fc1.weight, other.layers[0].fc1.weight)
    assert alphabet.prepend_bos and alphabet.append_eos  # the ESM-1b alphabet ESM-2 uses


def test_tiny_ladder_widens_and_loads_by_alias():
    ladder = tiny_ladder()
    assert list(ladder) == ["tiny-32", "tiny-48", "tiny-64"]
    assert [model.embed_dim for model in ladder.values()] == [32, 48, 64]
    model, _ = load_esm2("tiny-48")
    assert torch.equal(model.embed_tokens.weight, ladder["tiny-48"].embed_tokens.weight)
    assert weights_available("tiny-32")
    with pytest.raises(ValueError, match="odd|even"):
        tiny_esm2(2, 36, 4)


def test_checkpoint_round_trip_in_fair_esm_format(tmp_path):
    model, alphabet = tiny_esm2(6, 320, 20, seed=1)  # 8M's architecture: a checkpoint is checked against it
    model_path, regression_path = save_esm2_checkpoint(model, tmp_path / "esm2_t6_8M_UR50D.pt")
    assert regression_path.name == "esm2_t6_8M_UR50D-contact-regression.pt"
    # The file needs argparse.Namespace allow-listed, exactly like the published checkpoints.
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(model_path, weights_only=True)
    # fair-esm's own loader reads it (so it is the real format, "encoder." prefixes and cfg included).
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw, _ = esm.pretrained.load_model_and_alphabet_local(str(model_path))
    loaded, loaded_alphabet = load_esm2("8M", weights_dir=tmp_path)
    assert weights_available("8M", weights_dir=tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
        assert torch.equal(raw.state_dict()[key], value), key
    tokens = _tokens(alphabet)
    with torch.no_grad():
        torch.testing.assert_close(stock_forward(loaded, tokens), stock_forward(model, tokens), rtol=0, atol=0)
    assert loaded_alphabet.tok_to_idx == alphabet.tok_to_idx
    # a path works too, and a missing regression file is tolerated (embeddings do not need it)
    regression_path.unlink()
    by_path, _ = load_esm2(str(model_path))
    assert torch.equal(by_path.layers[1].fc2.weight, model.layers[1].fc2.weight)


def test_hub_cache_is_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model, _ = tiny_esm2(6, 320, 20, seed=2)
    save_esm2_checkpoint(model, tmp_path / "checkpoints" / "esm2_t6_8M_UR50D.pt")
    assert checkpoint_paths("8M")[0] == tmp_path / "checkpoints" / "esm2_t6_8M_UR50D.pt"
    loaded, _ = load_esm2("8M")
    assert torch.equal(loaded.layers[0].self_attn.q_proj.weight, model.layers[0].self_attn.q_proj.weight)


def test_offline_error_names_the_files_and_the_folder(tmp_path):
    assert not weights_available("650M", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)esm2_t33_650M_UR50D\.pt.*"
                                                r"esm2_t33_650M_UR50D-contact-regression\.pt.*in the folder "
                       + str(tmp_path)):
        load_esm2("650M", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="no checkpoint files"):
        checkpoint_paths("tiny-32")
    with pytest.raises(ValueError, match="must be an 'esm2\\*.pt' file name"):
        save_esm2_checkpoint(tiny_esm2()[0], tmp_path / "model.pt")


def test_weights_folder_from_the_environment(tmp_path, monkeypatch):
    from revdistill.esm.models.weights import checkpoint_paths, weights_available

    monkeypatch.setenv("REVDISTILL_WEIGHTS", str(tmp_path))
    model_path, regression_path = checkpoint_paths("8M")
    assert model_path == tmp_path / "esm2_t6_8M_UR50D.pt" and regression_path.parent == tmp_path
    assert not weights_available("8M")
    model_path.write_bytes(b"x")
    assert weights_available("8M")
