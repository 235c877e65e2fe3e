"""Write the small, deterministic ultrasound DICOM files in ``sample_data/``.

A speckle phantom (random scatterers with anechoic cysts, a hypo- and a hyperechoic lesion,
a hyperechoic layer and bright point targets) is imaged by a simulated curvilinear probe:
the scatterers are splatted on a polar (depth x beam angle) grid, convolved axially with an RF
pulse and laterally with a Gaussian beam that widens with depth, envelope-detected
(``|hilbert(rf)|``, i.e. Rayleigh speckle), log-compressed to 8 bit and scan-converted into a
sector on a black background. Burned-in text, an orientation marker and a depth scale are drawn
outside the sector, so every frame has non-tissue pixels, like a real scanner's screen.

Three instances of one study are written (uncompressed Explicit VR Little Endian):

- ``us_phantom_single.dcm``: US Image Storage, MONOCHROME2, 240 x 320, one frame;
- ``us_phantom_cine.dcm``: US Multi-frame Image Storage, MONOCHROME2, 6 frames of 200 x 256,
  the phantom drifting slowly between frames (Cine module, FrameTime 100 ms);
- ``us_phantom_rgb.dcm``: US Image Storage, RGB, 200 x 256, grey sector plus a colour bar.

Every output byte depends only on the seed: run it twice and the files are identical.

Usage: ``python sample_data/make_sample_data.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import convolve1d, gaussian_filter1d, map_coordinates
from scipy.signal import hilbert

logger = logging.getLogger(__name__)

SEED = 20240102
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
MANUFACTURER = "dicom-sr sample generator"

# --- physics of the simulated probe (units: cm) -------------------------------------------
F0_MHZ = 3.0
WAVELENGTH = 0.154 / F0_MHZ  # c = 1540 m/s
AXIAL_SIGMA = 0.045  # Gaussian envelope of the RF pulse
DYNAMIC_RANGE_DB = 55.0


def lateral_sigma(depth: np.ndarray) -> np.ndarray:
    """Lateral beam width (Gaussian sigma, cm): wider than the pulse, widening with depth."""
    return 0.05 + 0.013 * np.maximum(depth, 0.0)


# --- the phantom ---------------------------------------------------------------------------
CYSTS = [(-2.0, 3.0, 0.6), (1.5, 5.0, 0.8), (-0.9, 6.8, 0.45)]  # x, depth, radius: anechoic
LESIONS = [(2.4, 2.9, 0.7, 0.25), (-2.4, 5.4, 0.6, 3.0)]  # x, depth, radius, echogenicity
POINTS = [(0.4, d) for d in (1.0, 2.0, 4.0, 6.0, 7.5)] + [(-1.6, 4.0), (2.6, 6.6), (-3.0, 7.2)]


@dataclass(frozen=True)
class Phantom:
    """Scatterer positions (cm; x lateral, z depth below the skin line) and amplitudes."""

    x: np.ndarray
    z: np.ndarray
    amp: np.ndarray


def make_phantom(rng: np.random.Generator, n: int = 120_000) -> Phantom:
    """Random scatterers in a box that covers every sector, with the structures above."""
    x = rng.uniform(-8.0, 8.0, n)
    z = rng.uniform(-1.0, 11.0, n)
    echo = np.ones(n)
    layer = 1.3 + 0.15 * np.sin(1.3 * x)  # a wavy fascia-like hyperechoic layer
    echo[np.abs(z - layer) < 0.18] = 2.8
    for cx, cz, r, level in LESIONS:
        echo[(x - cx) ** 2 + (z - cz) ** 2 < r * r] = level
    for cx, cz, r in CYSTS:
        echo[(x - cx) ** 2 + (z - cz) ** 2 < r * r] = 0.0
    echo *= np.exp(-0.04 * np.clip(z, 0, None))  # residual attenuation after TGC
    amp = rng.standard_normal(n) * echo
    px, pz = np.array(POINTS).T
    return Phantom(
        np.concatenate([x, px]),
        np.concatenate([z, pz]),
        np.concatenate([amp, np.full(len(px), 60.0)]),
    )


# --- geometry of one image -----------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """A sector of a curvilinear probe placed in a frame of ``rows`` x ``cols`` pixels."""

    rows: int
    cols: int
    depth: float  # cm imaged below the skin line
    delta: float  # cm per pixel, both directions
    apex_r: float = 2.5  # probe radius: the virtual apex lies this far above the skin
    half_angle: float = np.deg2rad(30.0)
    top: int = 24  # row of the sector's highest point (its two upper corners)
    centre_col: int | None = None

    @property
    def cx(self) -> int:
        return self.cols // 2 - 6 if self.centre_col is None else self.centre_col

    @property
    def skin_row(self) -> float:
        """Row of the skin line on the centre beam (depth 0)."""
        return self.top + self.apex_r * (1 - np.cos(self.half_angle)) / self.delta

    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive pixel bounds (x0, y0, x1, y1) of the sector."""
        half = (self.apex_r + self.depth) * np.sin(self.half_angle) / self.delta
        x0, x1 = int(np.floor(self.cx - half)), int(np.ceil(self.cx + half))
        y1 = int(np.ceil(self.skin_row + self.depth / self.delta))
        return x0, self.top, x1, y1


def simulate_sector(
    ph: Phantom, g: Geometry, shift: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """B-mode grey levels (rows, cols) uint8 and the boolean sector mask."""
    dr = WAVELENGTH / 16
    r_min, r_max = g.apex_r, g.apex_r + g.depth
    n_r = int(np.ceil((r_max - r_min) / dr)) + 1
    dth = 0.025 / r_max
    n_th = int(np.ceil(2 * g.half_angle / dth)) + 1
    # splat the shifted scatterers onto the polar grid (linear in depth, nearest in angle)
    xs, zs = ph.x + shift[0], ph.z + shift[1]
    r = np.hypot(xs, zs + g.apex_r)
    th = np.arctan2(xs, zs + g.apex_r)
    fr = (r - r_min) / dr
    ft = np.rint((th + g.half_angle) / dth).astype(int)
    keep = (fr >= 0) & (fr < n_r - 1) & (ft >= 0) & (ft < n_th)
    fr, ft, amp = fr[keep], ft[keep], ph.amp[keep]
    i0 = np.floor(fr).astype(int)
    w = fr - i0
    grid = np.zeros((n_r, n_th))
    np.add.at(grid, (i0, ft), amp * (1 - w))
    np.add.at(grid, (i0 + 1, ft), amp * w)
    # RF: axial pulse (round trip: the carrier period in depth is half a wavelength)
    t = np.arange(-4 * AXIAL_SIGMA, 4 * AXIAL_SIGMA + dr / 2, dr)
    pulse = np.exp(-0.5 * (t / AXIAL_SIGMA) ** 2) * np.cos(4 * np.pi * t / WAVELENGTH)
    rf = convolve1d(grid, pulse, axis=0, mode="constant")
    # lateral beam, widening with depth: blend a few fixed-width blurs row by row
    radius = r_min + dr * np.arange(n_r)
    sig_lines = lateral_sigma(radius - g.apex_r) / (radius * dth)
    levels = np.geomspace(sig_lines.min(), sig_lines.max(), 6)
    blurred = np.stack([gaussian_filter1d(rf, s, axis=1, mode="constant") for s in levels])
    pos = np.interp(np.log(sig_lines), np.log(levels), np.arange(len(levels)))
    lo = np.minimum(np.floor(pos).astype(int), len(levels) - 2)
    frac = (pos - lo)[:, None]
    rows_idx = np.arange(n_r)
    rf = (1 - frac) * blurred[lo, rows_idx] + frac * blurred[lo + 1, rows_idx]
    rf += rng.standard_normal(rf.shape) * 0.01 * rf.std()  # electronic noise
    env = np.abs(hilbert(rf, axis=0))
    # log compression: the median speckle level maps to grey 100
    db = 20 * np.log10(env + 1e-12 * env.max())
    db -= np.median(db[:, n_th // 4 : 3 * n_th // 4]) + DYNAMIC_RANGE_DB * (1 - 100 / 255)
    grey = np.clip((db + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB * 255.0, 0, 255)
    grey = gaussian_filter1d(grey, 0.35 * g.delta / dr, axis=0)  # anti-alias to pixel pitch
    # scan conversion into the frame
    yy, xx = np.mgrid[0 : g.rows, 0 : g.cols].astype(float)
    px = (xx - g.cx) * g.delta
    pz = (yy - g.skin_row) * g.delta + g.apex_r
    pr, pt = np.hypot(px, pz), np.arctan2(px, pz)
    mask = (pr >= r_min) & (pr <= r_max) & (np.abs(pt) <= g.half_angle)
    coords = np.stack([(pr - r_min) / dr, (pt + g.half_angle) / dth])
    img = map_coordinates(grey, coords, order=1, mode="constant", cval=0.0)
    img = np.where(mask, np.rint(img), 0).astype(np.uint8)
    return img, mask


# --- burned-in annotations: a 3x5 bitmap font ------------------------------------------------
# fmt: off
_FONT_ROWS = {
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###",
    "3": "### ..# .## ..# ###", "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###", "7": "### ..# ..# .#. .#.", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###", "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.",
    "C": ".## #.. #.. #.. .##", "D": "##. #.# #.# #.# ##.", "E": "### #.. ##. #.. ###",
    "F": "### #.. ##. #.. #..", "G": ".## #.. #.# #.# .##", "H": "#.# #.# ### #.# #.#",
    "I": "### .#. .#. .#. ###", "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#", "O": ".#. #.# #.# #.# .#.",
    "P": "##. #.# ##. #.. #..", "R": "##. #.# ##. #.# #.#", "S": ".## #.. .#. ..# ##.",
    "T": "### .#. .#. .#. .#.", "U": "#.# #.# #.# #.# ###", "V": "#.# #.# #.# #.# .#.",
    "X": "#.# #.# .#. #.# #.#", "Z": "### ..# .#. #.. ###", "-": "... ... ### ... ...",
    ".": "... ... ... ... .#.", ":": "... .#. ... .#. ...", " ": "... ... ... ... ...",
}
# fmt: on
FONT = {
    ch: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)
    for ch, rows in _FONT_ROWS.items()
}


def draw_text(img: np.ndarray, text: str, row: int, col: int, value: int = 235) -> None:
    """Burn ``text`` (upper case, 3x5 glyphs, 1 px spacing) into ``img`` at (row, col)."""
    for i, ch in enumerate(text):
        glyph = FONT[ch]
        c = col + 4 * i
        img[row : row + 5, c : c + 3][glyph] = value


def annotate(img: np.ndarray, g: Geometry, lines: list[str]) -> None:
    """Header text top left, orientation marker, depth scale (cm) right of the sector."""
    for k, line in enumerate(lines):
        draw_text(img, line, 2 + 7 * k, 3)
    x0, y0, x1, _ = g.bbox()
    left = int(g.cx - g.apex_r * np.sin(g.half_angle) / g.delta)  # upper-left sector corner
    img[y0 - 6 : y0 - 2, left - 4 : left] = 250  # orientation marker
    col = min(x1 + 4, g.cols - 12)
    for cm in range(int(g.depth) + 1):
        row = int(round(g.skin_row + cm / g.delta))
        if row >= g.rows:
            break
        major = cm % 2 == 0
        img[row, col : col + (4 if major else 2)] = 200
        if major:
            draw_text(img, str(cm), max(row - 2, 0), col + 5, value=200)
    top = int(round(g.skin_row))
    img[top : int(round(g.skin_row + int(g.depth) / g.delta)) + 1, col] = 120
    draw_text(img, "CM", top - 9, col, value=200)


def colour_bar(rgb: np.ndarray, row: int, col: int, height: int = 48, width: int = 5) -> None:
    """A red-to-blue velocity-style bar, so the file has real chroma."""
    t = np.linspace(1.0, 0.0, height)[:, None]
    bar = np.stack([255 * t, 40 * np.ones_like(t), 255 * (1 - t)], axis=-1)
    rgb[row : row + height, col : col + width] = np.rint(bar).astype(np.uint8)


# --- DICOM -------------------------------------------------------------------------------
def uid(*parts: str) -> str:
    """Reproducible UID: pydicom's root plus a hash of the given parts."""
    return generate_uid(entropy_srcs=["dicom-sr sample data", str(SEED), *parts])


def region_item(g: Geometry) -> Dataset:
    """One tissue region around the sector; reference pixel = skin line on the centre beam."""
    x0, y0, x1, y1 = g.bbox()
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D tissue or flow
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0  # high priority, scaling not protected
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = g.delta
    item.PhysicalDeltaY = g.delta
    item.ReferencePixelX0 = g.cx - x0  # relative to the region's top-left corner
    item.ReferencePixelY0 = int(round(g.skin_row)) - y0
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = round(g.delta * (round(g.skin_row) - g.skin_row), 6)
    item.TransducerFrequency = int(F0_MHZ * 1000)  # kHz
    return item


def us_dataset(
    pixels: np.ndarray,
    g: Geometry,
    *,
    series: int,
    description: str,
    frame_time_ms: float | None = None,
) -> Dataset:
    """A complete US Image (or US Multi-frame Image) Storage dataset around ``pixels``."""
    multiframe = frame_time_ms is not None
    colour = pixels.ndim == (4 if multiframe else 3)
    sop_class = US_MULTIFRAME_STORAGE if multiframe else US_IMAGE_STORAGE
    sop_uid = uid("instance", str(series))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("implementation")
    meta.ImplementationVersionName = "DICOMSR_SAMPLE1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "101500", f"1016{series:02d}", f"1016{series:02d}"
    ds.AccessionNumber = ""
    ds.Modality = "US"
    ds.Manufacturer = MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Simulated speckle phantom"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = "make_sample_data.py"
    ds.SoftwareVersions = "1"
    ds.PatientName = "PHANTOM^SAMPLE"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "ABDOMEN"
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series", str(series))
    ds.StudyID = "1"
    ds.SeriesNumber = series
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"  # text and depth scale; no patient data
    ds.RecognizableVisualFeatures = "NO"
    ds.SequenceOfUltrasoundRegions = [region_item(g)]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    if multiframe:
        ds.NumberOfFrames = pixels.shape[0]
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.FrameTime = f"{frame_time_ms:.1f}"
        ds.CineRate = int(round(1000 / frame_time_ms))
        ds.RecommendedDisplayFrameRate = ds.CineRate
        ds.PreferredPlaybackSequencing = 0  # looping
    ds.Rows, ds.Columns = g.rows, g.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


HEADER = ["DICOM-SR PHANTOM", "C5-2 3.0MHZ", "DR55 G50"]


def make_all(out_dir: Path) -> list[Path]:
    """Simulate and write the three sample files into ``out_dir``; return their paths."""
    rng = np.random.default_rng(SEED)
    ph = make_phantom(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    g1 = Geometry(rows=240, cols=320, depth=10.0, delta=0.05)
    img, _ = simulate_sector(ph, g1, (0.0, 0.0), rng)
    annotate(img, g1, HEADER)
    written.append(
        _save(
            us_dataset(img, g1, series=1, description="B-mode phantom"),
            out_dir / "us_phantom_single.dcm",
        )
    )

    g2 = Geometry(rows=200, cols=256, depth=8.0, delta=0.05, top=20)
    frames = []
    for k in range(6):
        phase = 2 * np.pi * k / 6
        shift = (0.08 * np.sin(phase), 0.05 * (1 - np.cos(phase)))  # slow breathing drift
        f, _ = simulate_sector(ph, g2, shift, rng)
        annotate(f, g2, [*HEADER[:2], f"FR {k + 1}"])
        frames.append(f)
    cine = us_dataset(
        np.stack(frames), g2, series=2, description="B-mode phantom cine", frame_time_ms=100.0
    )
    written.append(_save(cine, out_dir / "us_phantom_cine.dcm"))

    g3 = Geometry(rows=200, cols=256, depth=8.0, delta=0.05, top=20, centre_col=134)
    grey, _ = simulate_sector(ph, g3, (-0.5, 0.2), rng)
    annotate(grey, g3, HEADER[:2])
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colour_bar(rgb, row=40, col=4)
    written.append(
        _save(
            us_dataset(rgb, g3, series=3, description="B-mode phantom RGB"),
            out_dir / "us_phantom_rgb.dcm",
        )
    )
    return written


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    logger.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder for the .dcm files (default: beside this script)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_all(args.out)


if __name__ == "__main__":
    main()
