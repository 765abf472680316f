"""Lattice geometry: periodic shifts, the Laplacian and its spectrum p_hat^2.

Everything here is exact (no Monte Carlo): the dense -Laplacian is built independently by
looping over sites and neighbours, so the vectorised code is checked against a reference
that shares none of its index arithmetic.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice

# 1d, 2d, 3d; odd and even extents, and anisotropic shapes (catches axis mix-ups)
SHAPES = [(5,), (8,), (4, 4), (3, 5), (6, 4), (3, 4, 5), (4, 4, 2)]


def reference_minus_laplacian(shape: tuple[int, ...]) -> np.ndarray:
    """-Laplacian built site by site: 2d on the diagonal, -1 for each forward/backward neighbour."""
    V = int(np.prod(shape))
    index = {x: i for i, x in enumerate(itertools.product(*[range(L) for L in shape]))}  # row-major
    A = np.zeros((V, V))
    for x, i in index.items():
        A[i, i] += 2 * len(shape)
        for mu, L in enumerate(shape):
            for step in (+1, -1):
                y = list(x)
                y[mu] = (y[mu] + step) % L
                A[i, index[tuple(y)]] -= 1.0
    return A


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_p_hat2_are_the_eigenvalues_of_the_dense_minus_laplacian(shape):
    lat = Lattice(shape)
    A = reference_minus_laplacian(shape)
    np.testing.assert_allclose(lat.laplacian_matrix(), A, atol=0, rtol=0)
    eig = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(np.sort(lat.p_hat2().ravel()), eig, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_p_hat2_is_in_fft_order_laplacian_is_diagonal_in_fourier_space(shape):
    """Not only the set of eigenvalues: p_hat2()[n] belongs to the plane wave with FFT index n."""
    lat = Lattice(shape)
    phi = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lhs = torch.fft.fftn(-lat.laplacian(phi), dim=lat.dims).numpy()
    rhs = lat.p_hat2() * torch.fft.fftn(phi, dim=lat.dims).numpy()
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)
    # the momenta themselves: p = 2 pi n / L in numpy FFT order
    for p, L in zip(lat.momenta(), shape):
        np.testing.assert_allclose(p, 2 * np.pi * np.fft.fftfreq(L), atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shift_plus_one_returns_the_forward_neighbour_phi_x_plus_mu(shape):
    lat = Lattice(shape)
    phi = torch.randn((3, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for mu in range(len(shape)):
        fwd = lat.shift(phi, mu, +1)
        bwd = lat.shift(phi, mu, -1)
        for x in itertools.product(*[range(L) for L in shape]):
            xp, xm = list(x), list(x)
            xp[mu] = (x[mu] + 1) % shape[mu]
            xm[mu] = (x[mu] - 1) % shape[mu]
            assert torch.equal(fwd[(slice(None), *x)], phi[(slice(None), *xp)])
            assert torch.equal(bwd[(slice(None), *x)], phi[(slice(None), *xm)])
        # the default direction is +1, and +1 / -1 are inverse to each other
        assert torch.equal(lat.shift(phi, mu), fwd)
        assert torch.equal(lat.shift(fwd, mu, -1), phi)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_laplacian_equals_minus_dense_matrix_times_phi_with_batch_axes(shape):
    lat = Lattice(shape)
    V = lat.volume
    phi = torch.randn((2, 3, *shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    A = reference_minus_laplacian(shape)
    expected = -(phi.reshape(-1, V).numpy() @ A.T).reshape(phi.shape)
    np.testing.assert_allclose(lat.laplacian(phi).numpy(), expected, atol=1e-12)
    # neighbour sum = Laplacian + 2 d phi
    np.testing.assert_allclose(
        lat.neighbour_sum(phi).numpy(), (lat.laplacian(phi) + 2 * lat.ndim * phi).numpy(), atol=1e-12
    )


def test_geometry_properties_volume_ndim_dims():
    lat = Lattice((3, 4, 5))
    assert lat.volume == 60 and lat.ndim == 3 and lat.dims == (-3, -2, -1)
    assert Lattice(7).shape == (7,)
    assert Lattice([4, 4]) == Lattice((4, 4))
    assert lat.to_dict() == {"shape": [3, 4, 5]}


@pytest.mark.parametrize(
    "bad", [(), (0, 4), (4, -1), (2.5, 4), "ab", None, [[2, 2]]], ids=["empty", "zero", "negative", "float", "str", "none", "nested"]
)
def test_bad_lattice_shapes_raise_lftml_error(bad):
    with pytest.raises(LftmlError):
        Lattice(bad)


def test_field_of_wrong_shape_and_oversized_dense_matrix_raise_lftml_error():
    lat = Lattice((4, 4))
    lat.check_field(torch.zeros(3, 4, 4))  # fine
    for bad in (torch.zeros(3, 4, 5), torch.zeros(4), torch.zeros(3, 5, 4)):
        with pytest.raises(LftmlError, match="lattice"):
            lat.check_field(bad)
    with pytest.raises(LftmlError):
        Lattice((65, 65)).laplacian_matrix()
