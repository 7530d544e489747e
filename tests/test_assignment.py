"""lvbd.assignment.hungarian: the enumerated small-K path against scipy's solver."""
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from lvbd.assignment import ENUMERATE_MAX, hungarian


def _total(cost, perm):
    return cost[np.arange(len(perm)), perm].sum()


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 4), (3, 4), (5, 5), (4, 6)])
@pytest.mark.parametrize("maximize", [False, True])
def test_optimal_like_scipy(shape, maximize):
    rng = np.random.default_rng(sum(shape) + maximize)
    for _ in range(50):
        cost = rng.normal(size=shape)
        perm = hungarian(cost, maximize=maximize)
        assert perm.dtype == np.int64 and len(set(perm.tolist())) == shape[0]
        rows, cols = linear_sum_assignment(cost, maximize=maximize)
        assert _total(cost, perm) == pytest.approx(cost[rows, cols].sum(), abs=1e-12)


def test_ties_take_the_identity():
    # a silent segment gives an all-equal matrix: the order must not change
    assert hungarian(np.zeros((ENUMERATE_MAX, ENUMERATE_MAX))).tolist() == list(range(ENUMERATE_MAX))


def test_infinite_entries_avoided():
    inf = np.inf
    assert hungarian(np.array([[inf, 1.0], [1.0, 5.0]])).tolist() == [1, 0]
    assert hungarian(np.array([[-inf, 1.0], [1.0, 5.0]]), maximize=True).tolist() == [1, 0]


def test_bad_shape():
    with pytest.raises(ValueError, match="K_rows <= K_cols"):
        hungarian(np.zeros((3, 2)))


def test_separating_k2_does_not_import_scipy_optimize():
    code = ("import numpy as np, sys; from lvbd.assignment import hungarian; "
            "hungarian(np.eye(2)); hungarian(np.ones((4, 4)), maximize=True); "
            "print('scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
