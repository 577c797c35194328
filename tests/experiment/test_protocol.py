"""The protocol object: every choice behind a number, named by an id and described in captions."""
from __future__ import annotations

import subprocess
import sys

import pytest

from revdistill.experiment.protocol import Protocol


def test_id_is_a_stable_digest_of_every_field():
    base = Protocol()
    changed = [Protocol(singles_only=False), Protocol(schemes=("fold_random_5",)), Protocol(fold_seed=1),
               Protocol(inner_folds=3), Protocol(inner_seed=1), Protocol(alphas=(1.0,)), Protocol(n_between=3),
               Protocol(n_below=0), Protocol(n_bootstrap=10), Protocol(ci=0.9), Protocol(bootstrap_seed=2),
               Protocol(representations=("esm2", "rd"))]
    assert len({p.id for p in changed} | {base.id}) == len(changed) + 1
    code = "from revdistill.experiment.protocol import Protocol; print(Protocol().id)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == base.id
    assert Protocol.from_dict(base.to_dict()) == base


def test_describe_names_what_ran():
    protocol = Protocol()
    assert "random/modulo/contiguous, averaged" in protocol.describe()
    assert "(random)" in protocol.describe(("fold_random_5",)) and protocol.id in protocol.describe()
    assert "single substitutions" in protocol.describe()
    assert "all variants" in Protocol(singles_only=False).describe()


def test_prefix_dims_cover_boundaries_between_and_below():
    assert Protocol().prefix_dims((320, 480, 640)) == [20, 50, 127, 320, 373, 427, 480, 533, 587, 640]
    assert Protocol(n_between=0, n_below=0).prefix_dims((32, 48)) == [32, 48]
    with pytest.raises(ValueError, match="strictly increasing"):
        Protocol().prefix_dims((48, 32))


@pytest.mark.parametrize("changes, message", [
    ({"schemes": "fold_random_5"}, "not one string"),
    ({"schemes": ("fold_weird",)}, r"\['fold_weird'\] unknown"),
    ({"schemes": ("fold_random_5", "fold_random_5")}, "repeats"),
    ({"representations": ("umap",)}, "unknown; choose from"),
    ({"inner_folds": 1}, "inner_folds=1 must be an integer >= 2"),
    ({"alphas": (0.0,)}, "positive finite"),
    ({"ci": 1.5}, "ci=1.5"),
    ({"n_bootstrap": -1}, "n_bootstrap=-1"),
    ({"singles_only": "yes"}, "singles_only='yes'"),
])
def test_bad_protocols_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        Protocol(**changes)
    with pytest.raises(ValueError, match="unknown protocol field"):
        Protocol.from_dict({"inner_fold": 3})
