"""The embedded model-atmosphere library: Kurucz 1993 ATLAS9, solar metallicity.

412 real ATLAS9 LTE spectra (Teff 3500–50 000 K, logg 0–5, [M/H] = 0), the
grid of ``shared/data/stellib/kurucz91_solar.grid.fits`` (source and
transformation in ``beastflow/data/stellib/README.md``), shipped inside the
package so that the default physics uses real atmospheres with no download.

Storage: ``atlas9_solar.npz.xz`` = an uncompressed ``.npz`` (flux as float32,
wavelengths and labels as in the FITS file) inside an xz (LZMA) stream, about
1 MB instead of 4 MB.  float32 keeps every flux within 6e-8 (relative) of the
float64 original (``tests/physics/test_atlas9.py`` measures it); xz beats
numpy's zlib by a third on these spectra (many exact zeros in the far UV of
cool stars, smooth continua).

The file labels model ``fp00t9400g395`` (Teff 9400 K, log g = 3.95, the Vega
model) with logg = 39.5.  BEAST reads the value as it is, so
``compat = "beast-2.1"`` (``PhysicsBehaviour.atlas9_file_logg``) keeps it; the default restores 3.95.
"""

from __future__ import annotations

import io
import logging
import lzma
from importlib import resources

import numpy as np

log = logging.getLogger(__name__)

NAME = "atlas9"
LABEL = "atlas9 (Kurucz 1993 ATLAS9 model atmospheres, solar, embedded)"
FILE = "atlas9_solar.npz.xz"
#: arrays of the packed file, all plain dtypes (loaded with allow_pickle=False)
ARRAYS = ("wavelength", "flux", "Teff", "logT", "logg", "Z", "name")
#: models whose file logg is 10x the true value: {model name: true logg}
MISLABELLED_LOGG = {"fp00t9400g395k2.txt": 3.95}


def embedded_path():
    """Traversable of the packaged file (a real path for an installed package)."""
    return resources.files("beastflow.data").joinpath("stellib", FILE)


def read_packed(data: bytes) -> dict[str, np.ndarray]:
    """Arrays of a packed library (bytes of an ``.npz.xz``); errors name what is wrong."""
    try:
        raw = lzma.decompress(data)
    except lzma.LZMAError as exc:
        raise ValueError(f"{FILE}: not an xz stream ({exc})") from exc
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        missing = [k for k in ARRAYS if k not in z.files]
        if missing:
            raise ValueError(f"{FILE}: packed library lacks arrays {missing}")
        return {k: z[k] for k in ARRAYS}


def pack_fits(fits_url: str) -> bytes:
    """Pack a BEAST-layout library FITS (one metallicity) into the embedded format.

    How ``atlas9_solar.npz.xz`` was made from the shared ``kurucz91_solar.grid.fits``:
    rows kept in file order, flux rounded to float32, nothing else changed.
    """
    from astropy.io import fits

    from beastflow import storage

    with storage.local_copy_for_read(fits_url) as path, fits.open(path, memmap=False) as hdul:
        img = np.asarray(hdul[0].data, dtype=np.float64)
        tab = hdul[1].data
        arrays = {
            "wavelength": img[-1].copy(),
            "flux": img[:-1].astype(np.float32),
            "Teff": np.asarray(tab["Teff"], dtype=np.float64),
            "logT": np.asarray(tab["logT"], dtype=np.float64),
            "logg": np.asarray(tab["logg"], dtype=np.float64),
            "Z": np.asarray(tab["Z"], dtype=np.float64),
            "name": np.asarray([str(n).strip() for n in tab["NAME"]]),
        }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME)


def corrected_logg(logg: np.ndarray, names: np.ndarray) -> np.ndarray:
    """logg with the known mislabelled models set to their true gravity."""
    out = np.asarray(logg, dtype=np.float64).copy()
    for i, n in enumerate(names):
        true = MISLABELLED_LOGG.get(str(n))
        if true is not None and out[i] != true:
            log.info("%s: model %s has logg %s in the source grid, using %s", NAME, n, out[i], true)
            out[i] = true
    return out


def atlas9_library(file_logg: bool = False):
    """The embedded ATLAS9 library as a ``StellarLibrary`` (validity polygon: BEAST's Kurucz one)."""
    from beastflow.physics.stellib import StellarLibrary

    a = read_packed(embedded_path().read_bytes())
    logg = a["logg"] if file_logg else corrected_logg(a["logg"], a["name"])
    n = a["logT"].size
    return StellarLibrary(
        name=NAME,
        label=LABEL,
        wavelength=a["wavelength"],
        logT=a["logT"],
        logg=logg,
        Z=a["Z"],
        flux=a["flux"],
        spec_row=np.arange(n),
        polygon_kind="kurucz",
        is_analytic=False,
        source=f"beastflow/data/stellib/{FILE}",
    )


__all__ = ["FILE", "LABEL", "NAME", "atlas9_library", "corrected_logg", "embedded_path", "pack_fits", "read_packed"]
