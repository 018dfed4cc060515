"""Malformed-input corpus for napari-emdeblur (issue 12), generated at run time.

``make_corpus(tmp_dir) -> list[Case]`` writes every input under ``tmp_dir/cases/<case id>/``
(nothing is committed; a full generation takes some seconds and ~80 MB of disk, most of it
the decompression-bomb cases). It started as the issue's research corpus and is the test
suite's own now (``tests/badinput/test_badinput.py``) and returns one :class:`Case` per input. A case says which
entry points it applies to, the CLI options per entry point, and the contract it must meet
(``expect``):

* ``ok``      must succeed (exit 0 / layer data); warnings allowed;
* ``warn``    suspicious but readable: success WITH a warning matching ``warn_re`` naming what
              was changed, or a clean refusal;
* ``refuse``  clean refusal: exit code != 0 (reader: ``EMReadError``), one line naming
              ``culprit`` (the file, or the option for bad options), no traceback;
* ``either``  success or clean refusal, only cleanliness is checked (e.g. wrong extension).

Everything else (no hang, no traceback, inputs and pre-existing outputs unchanged, no partial
output, message names the culprit, no internals leaked) applies to every case.

Only numpy, scipy, tifffile, imageio, zarr and (for the weights cases) torch are used; the
package is not imported, except to locate the shipped weights file.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# entry points
READER = "reader"            # napari_emdeblur._reader.get_reader(path)(path), in-process
SCORE = "score"              # emdeblur score INPUT --csv OUT
CORRECT = "correct"          # emdeblur correct INPUT -o OUT --tiles all
CORRECT_FLAGGED = "correct_flagged"  # emdeblur correct INPUT -o OUT --tiles flagged
TRAIN = "train"              # emdeblur train --data INPUT --out OUT --steps 2
WATCH = "watch"              # emdeblur watch DIR --out OUT --once
BATCH = "batch"              # emdeblur batch INPUT --out OUT --workers 0
LOAD_MODEL = "load_model"    # model.weights.load_model(path), in-process (the correction widget)
ENTRIES = (READER, SCORE, CORRECT, CORRECT_FLAGGED, TRAIN, WATCH, BATCH, LOAD_MODEL)

IMG = (READER, SCORE, CORRECT, TRAIN, WATCH, BATCH)  # tif / png / bmp files
IMG_NOPIPE = (READER, SCORE, CORRECT, TRAIN)  # jpg, odd extensions (watch/batch ignore them)
FOLDER = (READER, SCORE, CORRECT, WATCH, BATCH)  # mosaics and folder stacks
ZARR = (READER, SCORE, CORRECT)
META = (READER, SCORE)
WEIGHTS = (CORRECT, WATCH, LOAD_MODEL)

WARN_FLOAT = r"float|rescal|convert|uint16|precision|overflow"
WARN_BLANK = r"blank|constant|empty|no contrast|uniform|all[- ]zero|no signal"


@dataclass
class Case:
    id: str
    cls: str
    entries: tuple[str, ...]
    paths: list[str]
    expect: str = "refuse"  # ok | warn | refuse | either
    culprit: str | None = None  # text the message must contain (file name, or option)
    options: dict = field(default_factory=dict)  # entry -> extra CLI args
    output: dict = field(default_factory=dict)  # entry -> output path instead of the default
    expect_by_entry: dict = field(default_factory=dict)  # entry -> expect override
    warn_re: str | None = None
    content: str | None = None  # 'texture': result must be non-blank and unsaturated; 'nonblank'
    privs: str = "root"  # 'nodac': run with CAP_DAC_OVERRIDE/READ_SEARCH dropped
    fsize: int | None = None  # RLIMIT_FSIZE in bytes (full disk)
    env: dict = field(default_factory=dict)
    protect: list[str] = field(default_factory=list)  # other files that must not change
    data_dir: str | None = None  # watch DIR (default: the case folder)
    batch_inputs: list[str] | None = None  # default: paths
    train_data: str | None = None  # default: paths[0]
    weights: str | None = None  # weights file for CORRECT/WATCH/LOAD_MODEL
    pipeline_correct: bool = False  # watch/batch: correct (default --no-correct)
    reader_decline_ok: bool = False  # get_reader() returning None counts as a refusal
    widget: str = ""  # what a widget would meet (documentation)
    known: bool = False  # listed in issue 12's findings
    note: str = ""
    root: str = ""  # the case folder

    def expect_for(self, entry: str) -> str:
        return self.expect_by_entry.get(entry, self.expect)


# --------------------------------------------------------------------------- pixel data
def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """EM-like float64 texture in [0.02, 0.98]: blobs, dark membrane ridges, a little noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.standard_normal((h, w)), 3, mode="wrap")
    cells = ndimage.gaussian_filter(rng.standard_normal((h, w)), 6, mode="wrap")
    membr = np.exp(-((cells / (cells.std() + 1e-12)) * 4) ** 2)
    img = base / (np.abs(base).max() + 1e-12) - 1.2 * membr + 0.05 * rng.standard_normal((h, w))
    img = (img - img.min()) / (np.ptp(img) + 1e-12)
    return 0.02 + 0.96 * img


def u8(h=256, w=256, seed=0) -> np.ndarray:
    return np.round(texture(h, w, seed) * 255).astype(np.uint8)


def u16(h=256, w=256, seed=0, bits=16) -> np.ndarray:
    return np.round(texture(h, w, seed) * (2**bits - 1)).astype(np.uint16)


# --------------------------------------------------------------------------- file helpers
def _tif(path: Path, arr, **kw) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    kw.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, arr, **kw)
    return path


def _img(path: Path, arr, **kw) -> Path:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, arr, **kw)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with a tiny IDAT (a few rows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


def tiff_entries(buf: bytes) -> tuple[int, dict[int, tuple[int, int, int, int]]]:
    """First IFD of a little-endian classic TIFF: (ifd offset, {tag: (entry offset, type, count, value/offset)})."""
    assert buf[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", buf, 4)[0]
    n = struct.unpack_from("<H", buf, ifd)[0]
    out = {}
    for k in range(n):
        off = ifd + 2 + 12 * k
        tag, typ, cnt, val = struct.unpack_from("<HHII", buf, off)
        out[tag] = (off, typ, cnt, val)
    return ifd, out


def tiff_patch_values(buf: bytes, tag: int, values: list[int]) -> bytes:
    """Replace the (integer) values of ``tag`` in the first IFD (same count)."""
    b = bytearray(buf)
    _, ent = tiff_entries(buf)
    off, typ, cnt, val = ent[tag]
    size = _TIFF_TYPES[typ]
    fmt = {2: "<H", 4: "<I"}[size]
    where = off + 8 if cnt * size <= 4 else val
    for i, v in enumerate(values):
        struct.pack_into(fmt, b, where + i * size, v)
    return bytes(b)


def tiff_values(buf: bytes, tag: int) -> list[int]:
    _, ent = tiff_entries(buf)
    off, typ, cnt, val = ent[tag]
    size = _TIFF_TYPES[typ]
    fmt = {2: "<H", 4: "<I"}[size]
    where = off + 8 if cnt * size <= 4 else val
    return [struct.unpack_from(fmt, buf, where + i * size)[0] for i in range(cnt)]


def ome_xml(sx: int, sy: int, sz: int = 1, dtype: str = "uint8", images: int = 1, **px) -> str:
    attrs = " ".join(f'{k}="{v}"' for k, v in px.items())
    imgs = []
    for i in range(images):
        tiffdata = f'<TiffData IFD="{i}" PlaneCount="1"/>' if images > 1 else "<TiffData/>"
        imgs.append(
            f'<Image ID="Image:{i}"><Pixels ID="Pixels:{i}" DimensionOrder="XYZCT" Type="{dtype}" '
            f'SizeX="{sx}" SizeY="{sy}" SizeZ="{sz}" SizeC="1" SizeT="1" {attrs}>'
            f'<Channel ID="Channel:{i}:0" SamplesPerPixel="1"/>{tiffdata}</Pixels></Image>'
        )
    return ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            + "".join(imgs) + "</OME>")


def write_zarr(path: Path, arr: np.ndarray, attrs: dict | None, chunks=None, fmt: int = 2,
               raw_attrs: str | None = None) -> Path:
    """A zarr group with one array '0' and the given group attributes (``raw_attrs``: the
    attribute file's exact text, v2 only)."""
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    a = g.create_array("0", shape=arr.shape, dtype=arr.dtype, chunks=chunks or arr.shape)
    a[...] = arr
    if attrs is not None and raw_attrs is None:
        g.attrs.update(attrs)
    if raw_attrs is not None:
        (path / ".zattrs").write_text(raw_attrs)
    return path


def ngff(ndim: int, scale: list, unit: str | None = "nanometer", path="0", **extra) -> dict:
    names = ["t", "c", "z", "y", "x"][-ndim:]
    axes = [{"name": n, "type": "space" if n in "zyx" else ("time" if n == "t" else "channel"),
             **({"unit": unit} if unit and n in "zyx" else {})} for n in names]
    ms = {"version": "0.4", "axes": axes,
          "datasets": [{"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}
    ms.update(extra)
    return {"multiscales": [ms]}


def coords_text(rows: list[tuple], sep: str = "\t") -> str:
    return "".join(sep.join(str(v) for v in r) + "\n" for r in rows)


def shipped_weights() -> Path:
    """The shipped .pt (with its .json card) of whichever napari_emdeblur is importable."""
    import importlib.util

    spec = importlib.util.find_spec("napari_emdeblur")
    for loc in spec.submodule_search_locations or []:
        hits = sorted(p for p in Path(loc).rglob("*.pt") if p.with_suffix(".json").is_file())
        if hits:
            return hits[0]
    raise FileNotFoundError("shipped weights not found in the napari_emdeblur package")


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the corpus
class _Builder:
    def __init__(self, tmp: Path):
        self.tmp = Path(tmp)
        self.base = self.tmp / "cases"
        self.base.mkdir(parents=True, exist_ok=True)
        self.cases: list[Case] = []
        self._ids: set[str] = set()

    def dir(self, cid: str) -> Path:
        d = self.base / cid
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def add(self, c: Case) -> Case:
        assert c.id not in self._ids, c.id
        self._ids.add(c.id)
        c.root = c.root or str(self.base / c.id)
        c.paths = [str(p) for p in c.paths]
        if c.culprit is None and c.expect in ("refuse", "warn", "either") and c.paths:
            c.culprit = Path(c.paths[0]).name
        self.cases.append(c)
        return c

    # one file per case
    def file(self, cid: str, cls: str, name: str, writer, entries=IMG, **kw) -> Case:
        d = self.dir(cid)
        p = d / name
        writer(p)
        return self.add(Case(cid, cls, tuple(entries), [str(p)], **kw))


def make_corpus(tmp_dir: str | os.PathLike) -> list[Case]:
    b = _Builder(Path(tmp_dir))
    _valid(b)
    _special(b)
    _corrupt(b)
    _dtypes(b)
    _dims(b)
    _multipage(b)
    _metadata(b)
    _mosaic(b)
    _zarr(b)
    _weights(b)
    _nonutf8(b)
    _permissions(b)
    _fulldisk(b)
    _out_eq_in(b)
    _extensions(b)
    _train_only(b)
    _watch_only(b)
    _options(b)
    return b.cases


# --------------------------------------------------------------------------- awkward but valid
def _valid(b: _Builder) -> None:
    T = "texture"
    b.file("valid_u8", "valid", "section.tif", lambda p: _tif(p, u8()), expect="ok", content=T,
           expect_by_entry={CORRECT_FLAGGED: "ok"}, entries=IMG + (CORRECT_FLAGGED,))
    b.file("valid_u16_12bit", "valid", "sec12.tif", lambda p: _tif(p, u16(bits=12)), expect="ok", content=T,
           entries=IMG + (CORRECT_FLAGGED,))
    b.file("valid_u16_full", "valid", "sec16.tif", lambda p: _tif(p, u16()), expect="ok", content=T)
    b.file("valid_odd_size", "valid", "odd_257x131.tif", lambda p: _tif(p, u8(257, 131, 1)), expect="ok",
           content=T, entries=IMG + (CORRECT_FLAGGED,))
    b.file("valid_min_16x16", "valid", "min16.tif", lambda p: _tif(p, u8(16, 16, 2)), expect="ok",
           entries=(READER, SCORE, CORRECT, WATCH, BATCH), note="smallest size the reader accepts")
    b.file("valid_thin_16x2000", "valid", "thin.tif", lambda p: _tif(p, u8(16, 2000, 3)), expect="ok",
           entries=(READER, SCORE, CORRECT, WATCH, BATCH))
    b.file("valid_bigendian", "valid", "bigendian.tif", lambda p: _tif(p, u16(seed=4), byteorder=">"),
           expect="ok", content=T)
    b.file("valid_nonascii_name", "valid", "séction_Ω µm.tif", lambda p: _tif(p, u8(seed=5)), expect="ok",
           content=T)
    b.file("valid_spaces_name", "valid", "my section (1).tif", lambda p: _tif(p, u8(seed=6)), expect="ok")
    b.file("valid_upper_ext", "valid", "SECTION.TIF", lambda p: _tif(p, u8(seed=7)), expect="ok")
    b.file("valid_png_u8", "valid", "sec.png", lambda p: _img(p, u8(seed=8)), expect="ok", content=T)
    b.file("valid_png_u16", "valid", "sec16.png", lambda p: _img(p, u16(seed=9)), expect="ok", content=T)
    b.file("valid_bmp_grey_rgb", "valid", "sec.bmp", lambda p: _img(p, np.repeat(u8(seed=10)[..., None], 3, -1)),
           expect="ok", content=T)
    b.file("valid_jpeg", "valid", "sec.jpg", lambda p: _img(p, u8(seed=11), quality=95), expect="ok",
           entries=IMG_NOPIPE)
    b.file("valid_zlib_tiff", "valid", "zlib.tif", lambda p: _tif(p, u16(seed=12), compression="zlib"), expect="ok",
           content=T)
    b.file("valid_lzw_tiled_tiff", "valid", "lzw_tiled.tif",
           lambda p: _tif(p, u8(300, 200, 13), compression="lzw", tile=(64, 64)), expect="ok", content=T)
    b.file("valid_bigtiff", "valid", "big.tif", lambda p: _tif(p, u8(seed=14), bigtiff=True), expect="ok")
    b.file("valid_btf_ext", "valid", "sec.btf", lambda p: _tif(p, u8(seed=15), bigtiff=True), expect="ok",
           entries=IMG_NOPIPE)
    b.file("valid_ome_tiff", "valid", "sec.ome.tif",
           lambda p: _tif(p, u8(seed=16), ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.004,
                                                                  "PhysicalSizeY": 0.004}), expect="ok")
    b.file("valid_imagej_stack", "valid", "ij_stack.tif",
           lambda p: _tif(p, np.stack([u8(128, 128, s) for s in range(3)]), imagej=True, resolution=(0.25, 0.25),
                          metadata={"axes": "ZYX", "unit": "nm", "spacing": 40.0}),
           expect="ok", entries=(READER, SCORE, CORRECT, TRAIN))
    b.file("valid_ometiff_pyramid", "valid", "pyr.ome.tif", _pyramid, expect="ok", entries=(READER, SCORE, CORRECT),
           note="sub-resolution levels in SubIFDs are ignored")
    b.file("valid_thumbnail_page", "valid", "with_thumb.tif", _with_thumbnail, expect="ok",
           note="page 2 is a reduced-resolution thumbnail (NewSubfileType=1)")
    b.file("valid_fei_metadata", "valid", "fei.tif",
           lambda p: _tif(p, u8(seed=17), extratags=[(34682, "s", 0,
                                                      "[Scan]\r\nPixelWidth=4e-09\r\nPixelHeight=4e-09\r\n", True)]),
           expect="ok", entries=META)
    b.file("valid_int16_negative", "valid", "int16.tif",
           lambda p: _tif(p, (texture(256, 256, 18) * 60000 - 30000).astype(np.int16)), expect="warn",
           warn_re=r"signed|shift", content=T)
    b.file("valid_float32_01", "valid", "f32_01.tif", lambda p: _tif(p, texture(256, 256, 19).astype(np.float32)),
           expect="warn", warn_re=WARN_FLOAT, content=T)
    b.file("valid_float64_wide", "valid", "f64_wide.tif",
           lambda p: _tif(p, texture(256, 256, 20) * 5000 - 1000), expect="warn", warn_re=WARN_FLOAT, content=T)
    d = b.dir("valid_symlink")
    _tif(d / "real" / "target.tif", u8(seed=21))
    os.symlink(d / "real" / "target.tif", d / "link.tif")
    b.add(Case("valid_symlink", "valid", (READER, SCORE, CORRECT, BATCH), [d / "link.tif"], expect="ok"))
    d = b.dir("valid_folder_stack")
    for k in range(3):
        _tif(d / "stack" / f"z{k}.tif", u8(128, 128, 30 + k))
    b.add(Case("valid_folder_stack", "valid", FOLDER + (TRAIN,), [d / "stack"], expect="ok", data_dir=str(d / "stack")))
    d = b.dir("valid_lazy_tiff")
    _tif(d / "lazy.tif", u16(512, 512, 22))
    b.add(Case("valid_lazy_tiff", "valid", (READER, SCORE, CORRECT), [d / "lazy.tif"], expect="ok",
               env={"EMDEBLUR_LAZY_BYTES": "4096"}, content=T, note="read lazily (memory-mapped)"))
    d = b.dir("valid_lazy_zlib_tiff")
    _tif(d / "lazyz.tif", u16(512, 512, 23), compression="zlib", tile=(128, 128))
    b.add(Case("valid_lazy_zlib_tiff", "valid", (READER, SCORE, CORRECT), [d / "lazyz.tif"], expect="ok",
               env={"EMDEBLUR_LAZY_BYTES": "4096"}, content=T, note="read lazily through the zarr store"))


def _pyramid(p: Path) -> None:
    import tifffile

    a = u8(256, 256, 40)
    with tifffile.TiffWriter(p) as w:
        w.write(a, subifds=1, metadata={"axes": "YX"}, photometric="minisblack")
        w.write(a[::2, ::2], subfiletype=1, photometric="minisblack")


def _with_thumbnail(p: Path) -> None:
    import tifffile

    a = u8(256, 256, 41)
    with tifffile.TiffWriter(p) as w:
        w.write(a, photometric="minisblack", metadata=None)
        w.write(a[::4, ::4], subfiletype=1, photometric="minisblack", metadata=None)


# --------------------------------------------------------------------------- empty / special files
def _special(b: _Builder) -> None:
    b.file("zero_byte_tif", "special", "empty.tif", lambda p: _bytes(p, b""))
    b.file("zero_byte_png", "special", "empty.png", lambda p: _bytes(p, b""))
    d = b.dir("fifo_tif")
    os.mkfifo(d / "pipe.tif")
    b.add(Case("fifo_tif", "special", (READER, SCORE, CORRECT, WATCH), [d / "pipe.tif"], known=True,
               note="watch --once waits forever for it"))
    d = b.dir("char_device_tif")
    os.symlink(Path(os.sep, "dev", "zero"), d / "zero.tif")  # the endless character device
    b.add(Case("char_device_tif", "special", (READER, SCORE, WATCH), [d / "zero.tif"],
               note="symlink to /dev/zero: stat size 0, reading never ends"))
    d = b.dir("dir_named_tif")
    (d / "folder.tif").mkdir()
    b.add(Case("dir_named_tif", "special", (READER, SCORE, CORRECT), [d / "folder.tif"]))
    d = b.dir("dangling_symlink")
    os.symlink(d / "gone.tif", d / "dangling.tif")
    b.add(Case("dangling_symlink", "special", (READER, SCORE, CORRECT, BATCH), [d / "dangling.tif"]))
    d = b.dir("symlink_loop")
    os.symlink(d / "b.tif", d / "a.tif")
    os.symlink(d / "a.tif", d / "b.tif")
    b.add(Case("symlink_loop", "special", (READER, SCORE, WATCH), [d / "a.tif"]))
    d = b.dir("empty_folder")
    (d / "empty").mkdir()
    b.add(Case("empty_folder", "special", (READER, SCORE, CORRECT, TRAIN, BATCH), [d / "empty"],
               reader_decline_ok=True))
    d = b.dir("folder_only_text")
    _bytes(d / "notes" / "readme.txt", b"hello\n")
    b.add(Case("folder_only_text", "special", (READER, SCORE, TRAIN, BATCH), [d / "notes"], reader_decline_ok=True))
    d = b.dir("folder_hidden_images")
    _tif(d / "hid" / ".hidden.tif", u8(seed=50))
    b.add(Case("folder_hidden_images", "special", (READER, SCORE), [d / "hid"], reader_decline_ok=True))
    d = b.dir("stack_with_zero_byte")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 51))
    _bytes(d / "stk" / "z1.tif", b"")
    b.add(Case("stack_with_zero_byte", "special", FOLDER + (TRAIN,), [d / "stk"], culprit="z1.tif",
               data_dir=str(d / "stk"), expect_by_entry={WATCH: "refuse"}, known=True))
    d = b.dir("stack_size_mismatch")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 52))
    _tif(d / "stk" / "z1.tif", u8(96, 128, 53))
    b.add(Case("stack_size_mismatch", "special", (READER, SCORE, CORRECT, TRAIN), [d / "stk"], culprit="z1.tif",
               expect_by_entry={TRAIN: "ok"}))
    d = b.dir("stack_one_corrupt")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 54))
    _bytes(d / "stk" / "z1.tif", b"II*\x00" + os.urandom(300))
    b.add(Case("stack_one_corrupt", "special", FOLDER + (TRAIN,), [d / "stk"], culprit="z1.tif",
               data_dir=str(d / "stk")))
    d = b.dir("stack_mixed_dtype")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 55))
    _tif(d / "stk" / "z1.tif", u16(128, 128, 56))
    b.add(Case("stack_mixed_dtype", "special", (READER, SCORE, CORRECT), [d / "stk"], culprit="z1.tif"))
    d = b.dir("lazy_stack_mixed_dtype")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 57))
    _tif(d / "stk" / "z1.tif", u16(128, 128, 58))
    b.add(Case("lazy_stack_mixed_dtype", "special", (READER, SCORE), [d / "stk"], culprit="z1.tif",
               env={"EMDEBLUR_LAZY_BYTES": "1000"}, note="a lazy folder stack checks dtypes only when drawn",
               widget="qc widget scores the lazy stack: fails mid-run"))
    d = b.dir("stack_fifo_member")
    _tif(d / "stk" / "z0.tif", u8(128, 128, 59))
    _tif(d / "stk" / "z1.tif", u8(128, 128, 60))
    os.mkfifo(d / "stk" / "z2.tif")
    b.add(Case("stack_fifo_member", "special", FOLDER, [d / "stk"], culprit="z2.tif", expect="either",
               expect_by_entry={WATCH: "refuse", BATCH: "refuse"}, data_dir=str(d / "stk"), known=True,
               note="reader skips the pipe; watch --once must report and skip it, not wait"))


# --------------------------------------------------------------------------- truncated / corrupt
def _corrupt(b: _Builder) -> None:
    import io as _io

    import tifffile

    def tif_bytes(a, **kw) -> bytes:
        buf = _io.BytesIO()
        kw.setdefault("photometric", "minisblack")
        tifffile.imwrite(buf, a, **kw)
        return buf.getvalue()

    def png_bytes(a) -> bytes:
        import imageio.v3 as iio

        return iio.imwrite("<bytes>", a, extension=".png")

    good = tif_bytes(u8(seed=70))
    b.file("tif_truncated_half", "corrupt", "trunc.tif", lambda p: _bytes(p, good[: len(good) // 2]))
    b.file("tif_header_only_8", "corrupt", "hdr8.tif", lambda p: _bytes(p, good[:8]))
    b.file("tif_magic_only_4", "corrupt", "magic4.tif", lambda p: _bytes(p, b"II*\x00"), known=True,
           note="'unpack requires a buffer of 4 bytes'")
    b.file("tif_random_garbage", "corrupt", "garbage.tif", lambda p: _bytes(p, np.random.default_rng(1).bytes(5000)))
    b.file("tif_ifd_beyond_eof", "corrupt", "ifd_eof.tif", lambda p: _bytes(p, b"II*\x00" + struct.pack("<I", 10**6) + b"\0" * 64))
    ifd, _ = tiff_entries(good)
    bad = bytearray(good)
    struct.pack_into("<H", bad, ifd, 0xFFFF)
    b.file("tif_ifd_huge_count", "corrupt", "ifd_count.tif", lambda p: _bytes(p, bytes(bad)))
    # an IFD whose next-IFD pointer points to itself
    _, ent = tiff_entries(good)
    loop = bytearray(good)
    struct.pack_into("<I", loop, ifd + 2 + 12 * len(ent), ifd)
    b.file("tif_ifd_loop", "corrupt", "ifd_loop.tif", lambda p: _bytes(p, bytes(loop)), expect="either",
           note="page chain loops onto itself")
    gz = tif_bytes(u8(seed=71), compression="zlib", rowsperstrip=16)
    counts = tiff_values(gz, 279)
    offs = tiff_values(gz, 273)
    zc = bytearray(gz)
    o = offs[len(offs) // 2]
    zc[o : o + counts[len(offs) // 2]] = np.random.default_rng(2).bytes(counts[len(offs) // 2])
    b.file("tif_zlib_corrupt_strip", "corrupt", "zlib_bad.tif", lambda p: _bytes(p, bytes(zc)))
    lzw = tif_bytes(u8(seed=72), compression="lzw")
    b.file("tif_lzw_truncated", "corrupt", "lzw_trunc.tif", lambda p: _bytes(p, lzw[: int(len(lzw) * 0.7)]))
    bt = tif_bytes(u8(seed=73), bigtiff=True)
    b.file("bigtiff_truncated", "corrupt", "big_trunc.tif", lambda p: _bytes(p, bt[: len(bt) // 3]))
    zero_counts = tiff_patch_values(good, 279, [0] * len(tiff_values(good, 279)))
    b.file("tif_zero_bytecounts", "corrupt", "zero_counts.tif", lambda p: _bytes(p, zero_counts), expect="refuse",
           note="strip byte counts 0: no pixel data at all")
    tiled = tif_bytes(u8(256, 256, 74), tile=(64, 64))
    tc = tiff_values(tiled, 325)
    tc[5] = 0
    missing_tile = tiff_patch_values(tiled, 325, tc)
    b.file("tif_tile_missing", "corrupt", "tile_missing.tif", lambda p: _bytes(p, missing_tile), expect="warn",
           warn_re=r"missing|incomplete|no data|black", note="one of 16 tiles has byte count 0 (reads as a black square)")
    # width/length tags claiming 100000 x 100000
    huge = tiff_patch_values(tiff_patch_values(good, 256, [100000]), 257, [100000])
    b.file("tif_header_claims_huge", "corrupt", "claims_huge.tif", lambda p: _bytes(p, huge))
    pg = png_bytes(u8(seed=75))
    b.file("png_truncated", "corrupt", "trunc.png", lambda p: _bytes(p, pg[: len(pg) // 2]))
    b.file("png_signature_only", "corrupt", "sig.png", lambda p: _bytes(p, pg[:8]))
    b.file("png_garbage", "corrupt", "garbage.png", lambda p: _bytes(p, np.random.default_rng(3).bytes(3000)))
    crc = bytearray(pg)
    k = pg.index(b"IDAT") + 40
    crc[k] ^= 0xFF
    b.file("png_bad_crc", "corrupt", "badcrc.png", lambda p: _bytes(p, bytes(crc)))
    import imageio.v3 as iio

    bm = iio.imwrite("<bytes>", np.repeat(u8(seed=76)[..., None], 3, -1), extension=".bmp")
    b.file("bmp_truncated", "corrupt", "trunc.bmp", lambda p: _bytes(p, bm[: len(bm) // 2]))
    b.file("bmp_garbage", "corrupt", "garbage.bmp", lambda p: _bytes(p, b"BM" + np.random.default_rng(4).bytes(2000)))
    jp = iio.imwrite("<bytes>", u8(seed=77), extension=".jpg")
    b.file("jpeg_truncated", "corrupt", "trunc.jpg", lambda p: _bytes(p, jp[: len(jp) // 2]), entries=IMG_NOPIPE)
    b.file("jpeg_garbage", "corrupt", "garbage.jpg", lambda p: _bytes(p, b"\xff\xd8\xff" + np.random.default_rng(5).bytes(2000)),
           entries=IMG_NOPIPE)
    b.file("html_as_tif", "corrupt", "download.tif",
           lambda p: _bytes(p, b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"))
    b.file("gzip_as_tif", "corrupt", "packed.tif", lambda p: _bytes(p, gzip.compress(good)))
    b.file("png_bomb_header", "corrupt", "bomb.png", lambda p: _bytes(p, png_bomb(60000, 60000)),
           note="IHDR claims 60000 x 60000 (3.6 GB), data for 4 rows")
    # a real zlib bomb: 16000 x 16000 zeros (256 MB) in a ~250 kB file
    d = b.dir("tif_zlib_bomb")
    _tif(d / "bomb.tif", np.zeros((16000, 16000), np.uint8), compression="zlib", rowsperstrip=1000)
    b.add(Case("tif_zlib_bomb", "corrupt", (READER, SCORE, BATCH), [d / "bomb.tif"], expect="warn",
               warn_re=WARN_BLANK, note="256 MB of zeros from 250 kB: decompression ratio ~1000; blank"))
    # lazily read compressed TIFF with one corrupt tile: fails when drawn
    lz = tif_bytes(u16(512, 512, 78), compression="zlib", tile=(128, 128))
    to = tiff_values(lz, 324)
    tcs = tiff_values(lz, 325)
    lzb = bytearray(lz)
    lzb[to[9] : to[9] + tcs[9]] = np.random.default_rng(6).bytes(tcs[9])
    d = b.dir("lazy_tif_corrupt_tile")
    _bytes(d / "lazy_bad.tif", bytes(lzb))
    b.add(Case("lazy_tif_corrupt_tile", "corrupt", (READER, SCORE), [d / "lazy_bad.tif"],
               env={"EMDEBLUR_LAZY_BYTES": "4096"}, note="lazy: the bad tile is decoded only when drawn",
               widget="napari shows a broken layer; the qc widget fails mid-run"))


# --------------------------------------------------------------------------- dtypes
def _dtypes(b: _Builder) -> None:
    t = texture(256, 256, 80)
    T = "texture"
    spec = [
        # id, array, expect, warn_re, content, extra
        ("dtype_bool", t > 0.5, "refuse", None, None, {}),
        ("dtype_int8_negative", (t * 250 - 125).astype(np.int8), "warn", r"signed|shift", T, {}),
        ("dtype_int8_positive", (t * 120).astype(np.int8), "warn", r"int8|uint8", T, {}),
        ("dtype_int16_negative", (t * 60000 - 30000).astype(np.int16), "warn", r"signed|shift", T, {}),
        ("dtype_int32_in_range", (t * 60000).astype(np.int32), "warn", r"int32|uint16", T, {}),
        ("dtype_int32_negative_big", (t * 2e9 - 1e9).astype(np.int32), "refuse", None, None, {}),
        ("dtype_uint32_large", (t * 4e9).astype(np.uint32), "refuse", None, None, {}),
        ("dtype_int64_in_range", (t * 60000).astype(np.int64), "warn", r"int64|uint16", T, {}),
        ("dtype_uint64_huge", (t * 1.8e19).astype(np.uint64), "refuse", None, None, {}),
        ("dtype_float16_01", t.astype(np.float16), "warn", WARN_FLOAT, T, {"known": True,
                                                                              "note": "float16 overflow: all-zero uint16"}),
        ("dtype_float16_wide", (t * 60000).astype(np.float16), "warn", WARN_FLOAT, T, {}),
        ("dtype_float16_inf", np.where(t > 0.9, np.inf, t).astype(np.float16), "refuse", None, None, {}),
        ("dtype_float32_huge_span", ((t * 2 - 1) * 3e38).astype(np.float32), "warn", WARN_FLOAT, T,
         {"known": True, "note": "+-3e38: (x - lo) overflows, 31 % saturated"}),
        ("dtype_float32_some_nan", np.where(t > 0.9, np.nan, t).astype(np.float32), "refuse", None, None, {}),
        ("dtype_float32_all_nan", np.full((256, 256), np.nan, np.float32), "refuse", None, None, {}),
        ("dtype_float32_inf", np.where(t > 0.9, np.inf, t).astype(np.float32), "refuse", None, None, {}),
        ("dtype_float32_constant", np.full((256, 256), 0.5, np.float32), "warn", WARN_BLANK, None, {}),
        ("dtype_float64_subnormal_span", t * 1e-310, "warn", WARN_FLOAT, T,
         {"note": "span 1e-310: 65535/span overflows to inf"}),
        ("dtype_float64_negative_01", t - 1.0, "warn", WARN_FLOAT, T, {}),
        ("dtype_complex64", (t + 1j * t).astype(np.complex64), "refuse", None, None, {}),
        ("dtype_complex128", t + 1j * t, "refuse", None, None, {}),
        ("dtype_uint16_all_zero", np.zeros((256, 256), np.uint16), "warn", WARN_BLANK, None, {}),
        ("dtype_uint8_all_max", np.full((256, 256), 255, np.uint8), "warn", WARN_BLANK, None, {}),
        ("dtype_uint8_pure_noise", np.random.default_rng(81).integers(0, 256, (256, 256), dtype=np.uint8),
         "warn", r"noise|no structure|implausib", None, {"known": True,
                                                          "note": "pure noise scores far sharper than any real EM"}),
    ]
    for cid, arr, expect, wre, content, extra in spec:
        entries = IMG if arr.dtype.kind not in "c" else IMG
        b.file(cid, "dtype", f"{cid[6:]}.tif", (lambda a: lambda p: _tif(p, a))(arr), entries=entries,
               expect=expect, warn_re=wre, content=content, **extra)
    # the same float16 trap through OME-Zarr and a PNG-free path is covered in _zarr


# --------------------------------------------------------------------------- shapes / channels / dims
def _dims(b: _Builder) -> None:
    b.file("tiny_1x1", "dims", "one_px.tif", lambda p: _tif(p, np.array([[7]], np.uint8)))
    b.file("tiny_15x15", "dims", "fifteen.tif", lambda p: _tif(p, u8(15, 15, 90)))
    b.file("tiny_16x15", "dims", "sixteen_by_15.tif", lambda p: _tif(p, u8(16, 15, 91)))
    b.file("line_1x5000", "dims", "line.tif", lambda p: _tif(p, u8(1, 5000, 92)))
    b.file("planar_2ch_tiff", "dims", "two_channel_planar.tif",
           lambda p: _tif(p, np.stack([u8(seed=93), u8(seed=94)]), planarconfig="separate"),
           expect="warn", warn_re=r"channel|sample", known=True, note="read as a 2-section stack")
    b.file("contig_2ch_tiff", "dims", "two_channel_contig.tif",
           lambda p: _tif(p, np.stack([u8(seed=95), u8(seed=96)], -1), planarconfig="contig"),
           expect="warn", warn_re=r"channel|alpha|sample")
    b.file("imagej_2ch", "dims", "ij_two_channels.tif",
           lambda p: _tif(p, np.stack([u8(seed=97), u8(seed=98)]), imagej=True, metadata={"axes": "CYX"}),
           expect="warn", warn_re=r"channel", note="ImageJ channels (axes CYX)")
    b.file("imagej_zc_hyperstack", "dims", "ij_zc.tif",
           lambda p: _tif(p, np.stack([np.stack([u8(64, 64, 99 + 2 * z + c) for c in range(2)]) for z in range(3)]),
                          imagej=True, metadata={"axes": "ZCYX"}),
           expect="warn", warn_re=r"channel", note="a z stack of 2 channels: the first channel, with a warning")
    b.file("rgb_distinct", "dims", "rgb.tif", lambda p: _tif(p, np.stack([u8(seed=s) for s in (101, 102, 103)], -1),
                                                             photometric="rgb"),
           expect="warn", warn_re=r"colour|color|rgb|grey|luminance")
    b.file("rgb_planar", "dims", "rgb_planar.tif",
           lambda p: _tif(p, np.stack([u8(seed=s) for s in (104, 105, 106)]), photometric="rgb", planarconfig="separate"),
           expect="warn", warn_re=r"colour|color|rgb|grey|luminance", note="RGB stored planar (axes SYX)")
    b.file("rgba_png", "dims", "rgba.png", lambda p: _img(p, np.dstack([u8(seed=107)] * 3 + [np.full((256, 256), 255, np.uint8)])),
           expect="warn", warn_re=r"alpha|colour|grey")
    b.file("grey_alpha_png", "dims", "la.png", lambda p: _img(p, np.dstack([u8(seed=108), np.full((256, 256), 200, np.uint8)])),
           expect="warn", warn_re=r"alpha")
    b.file("cmyk_tiff", "dims", "cmyk.tif",
           lambda p: _tif(p, np.stack([u8(seed=s) for s in (109, 110, 111, 112)], -1), photometric="separated"),
           expect="warn", warn_re=r"cmyk|separated|ink", note="CMYK read as RGBA")
    b.file("palette_png", "dims", "palette.png", _palette_png, expect="either", entries=IMG_NOPIPE)
    b.file("bilevel_png", "dims", "mask.png", lambda p: _img(p, (u8(seed=113) > 128).astype(bool)))
    b.file("samples5", "dims", "five_samples.tif", lambda p: _tif(p, np.stack([u8(64, 64, s) for s in range(5)], -1),
                                                                 planarconfig="contig"))
    b.file("nd4", "dims", "four_d.tif", lambda p: _tif(p, np.zeros((2, 3, 64, 64), np.uint8) + u8(64, 64, 114)))
    b.file("nd5", "dims", "five_d.tif", lambda p: _tif(p, np.zeros((2, 2, 2, 32, 32), np.uint8) + u8(32, 32, 115)))
    b.file("stack_3_pages", "dims", "stack3.tif", lambda p: _tif(p, np.stack([u8(128, 128, s) for s in range(3)])),
           expect="ok", entries=(READER, SCORE, CORRECT, TRAIN))
    b.file("stack_500_tiny", "dims", "stack500.tif", lambda p: _tif(p, np.stack([u8(16, 16, 0)] * 500)),
           expect="ok", entries=(READER, SCORE), note="500 sections of 16 x 16")
    b.file("stack_2_tiny_planes", "dims", "stack_tiny.tif", lambda p: _tif(p, np.zeros((2, 8, 8), np.uint8)))
    b.file("channels_first_3", "dims", "chw3.tif", lambda p: _tif(p, np.stack([u8(seed=s) for s in (116, 117, 118)]),
                                                                 metadata={"axes": "CYX"}),
           expect="warn", warn_re=r"channel", note="axes CYX in the tifffile shaped metadata")


def _palette_png(p: Path) -> None:
    from PIL import Image

    im = Image.fromarray(u8(seed=119)).convert("P")
    p.parent.mkdir(parents=True, exist_ok=True)
    im.save(p)


# --------------------------------------------------------------------------- multi-page
def _multipage(b: _Builder) -> None:
    import tifffile

    def two(p: Path, a, c) -> None:
        with tifffile.TiffWriter(p) as w:
            w.write(a, photometric="minisblack", metadata=None)
            w.write(c, photometric="minisblack", metadata=None)

    b.file("pages_diff_shape", "multipage", "pages_shape.tif", lambda p: two(p, u8(seed=120), u8(128, 192, 121)),
           expect="warn", warn_re=r"page|series|ignored|dropped", known=True)
    b.file("pages_diff_dtype", "multipage", "pages_dtype.tif", lambda p: two(p, u8(seed=122), u16(seed=123)),
           expect="warn", warn_re=r"page|series|ignored|dropped", known=True)
    b.file("ome_two_images", "multipage", "two_images.ome.tif", _ome_two_images,
           expect="warn", warn_re=r"series|ignored|dropped|second image|2 images", entries=(READER, SCORE, CORRECT, TRAIN))
    good = u8(128, 128, 124)

    def trunc_third(p: Path) -> None:
        _tif(p, np.stack([good, good, good]))
        data = p.read_bytes()
        p.write_bytes(data[: len(data) - 8000])

    b.file("stack_last_page_truncated", "multipage", "stack_trunc.tif", trunc_third)


def _ome_two_images(p: Path) -> None:
    import tifffile

    xml = ome_xml(256, 256, images=2)
    with tifffile.TiffWriter(p) as w:
        w.write(u8(seed=125), photometric="minisblack", description=xml, metadata=None)
        w.write(u8(seed=126), photometric="minisblack", metadata=None)


# --------------------------------------------------------------------------- metadata
def _metadata(b: _Builder) -> None:
    stack = np.stack([u8(64, 64, s) for s in range(3)])
    W_PS = r"pixel size|spacing|implausib|ignored|metadata"

    def ij(p: Path, a, res, unit="nm", spacing=None) -> None:
        md = {"axes": "ZYX" if a.ndim == 3 else "YX", "unit": unit}
        if spacing is not None:
            md["spacing"] = spacing
        _tif(p, a, imagej=True, resolution=(res, res), metadata=md)

    b.file("ij_pixel_2e-10", "metadata", "px_2e-10.tif", lambda p: ij(p, u8(seed=130), 4e9), entries=META,
           expect="warn", warn_re=W_PS, known=True)
    b.file("ij_pixel_1e6um", "metadata", "px_huge.tif", lambda p: ij(p, u8(seed=131), 1e-6, unit="um"), entries=META,
           expect="warn", warn_re=W_PS, note="1 m per pixel: silently dropped today")
    b.file("ij_spacing_negative", "metadata", "z_neg.tif", lambda p: ij(p, stack, 0.25, spacing=-5.0), entries=META,
           expect="warn", warn_re=W_PS, known=True)
    b.file("ij_spacing_inf", "metadata", "z_inf.tif", lambda p: ij(p, stack, 0.25, spacing=float("inf")),
           entries=META, expect="warn", warn_re=W_PS, known=True)
    b.file("ij_spacing_nan", "metadata", "z_nan.tif", lambda p: ij(p, stack, 0.25, spacing=float("nan")),
           entries=META, expect="warn", warn_re=W_PS, known=True)
    b.file("ij_unit_pixel", "metadata", "unit_pixel.tif", lambda p: ij(p, u8(seed=132), 1.0, unit="pixel"),
           entries=META, expect="ok")
    b.file("ij_unit_nonsense", "metadata", "unit_furlong.tif", lambda p: ij(p, u8(seed=133), 0.25, unit="furlong"),
           entries=META, expect="warn", warn_re=r"unit|pixel size|ignored")

    def ome(p: Path, a, **px) -> None:
        sz = a.shape[0] if a.ndim == 3 else 1
        xml = ome_xml(a.shape[-1], a.shape[-2], sz, **px)
        _tif(p, a, description=xml, metadata=None)

    b.file("ome_pixel_negative", "metadata", "ome_neg.ome.tif", lambda p: ome(p, u8(seed=134), PhysicalSizeX=-4,
                                                                                PhysicalSizeY=-4),
           entries=META, expect="warn", warn_re=W_PS)
    b.file("ome_pixel_1e30", "metadata", "ome_1e30.ome.tif", lambda p: ome(p, u8(seed=135), PhysicalSizeX=1e30,
                                                                             PhysicalSizeY=1e30),
           entries=META, expect="warn", warn_re=W_PS)
    b.file("ome_pixel_1e-30", "metadata", "ome_1e-30.ome.tif",
           lambda p: ome(p, u8(seed=136), PhysicalSizeX=1e-30, PhysicalSizeY=1e-30), entries=META,
           expect="warn", warn_re=W_PS)
    b.file("ome_unit_parsec", "metadata", "ome_parsec.ome.tif",
           lambda p: ome(p, u8(seed=137), PhysicalSizeX=4, PhysicalSizeXUnit="pc", PhysicalSizeY=4,
                         PhysicalSizeYUnit="pc"), entries=META, expect="warn", warn_re=r"unit|pixel size|ignored")
    b.file("ome_z_negative", "metadata", "ome_zneg.ome.tif",
           lambda p: ome(p, stack, PhysicalSizeX=4, PhysicalSizeXUnit="nm", PhysicalSizeY=4, PhysicalSizeYUnit="nm",
                         PhysicalSizeZ=-5, PhysicalSizeZUnit="nm"), entries=META, expect="warn", warn_re=W_PS)
    b.file("ome_z_nan", "metadata", "ome_znan.ome.tif",
           lambda p: ome(p, stack, PhysicalSizeX=4, PhysicalSizeXUnit="nm", PhysicalSizeY=4, PhysicalSizeYUnit="nm",
                         PhysicalSizeZ="NaN", PhysicalSizeZUnit="nm"), entries=META, expect="warn", warn_re=W_PS)
    b.file("ome_xml_broken", "metadata", "ome_broken.ome.tif",
           lambda p: _tif(p, u8(seed=138), description='<?xml version="1.0"?><OME xmlns="x"><Image><Pixels SizeX="2',
                          metadata=None), entries=META, expect="either")

    def desc(p: Path, a, d: dict) -> None:
        _tif(p, a, description=json.dumps(d), metadata=None)

    b.file("json_z_spacing_string", "metadata", "z_str.tif",
           lambda p: desc(p, stack, {"pixel_size_nm": [4, 4], "z_spacing_nm": "abc"}), entries=META,
           expect="warn", warn_re=W_PS)
    b.file("json_z_spacing_list", "metadata", "z_list.tif",
           lambda p: desc(p, stack, {"pixel_size_nm": [4, 4], "z_spacing_nm": [1, 2]}), entries=META,
           expect="warn", warn_re=W_PS)
    b.file("json_z_spacing_negative", "metadata", "z_json_neg.tif",
           lambda p: desc(p, stack, {"pixel_size_nm": [4, 4], "z_spacing_nm": -5}), entries=META,
           expect="warn", warn_re=W_PS)
    b.file("json_pixel_string", "metadata", "px_str.tif",
           lambda p: desc(p, u8(seed=139), {"pixel_size_nm": ["a", 4]}), entries=META, expect="either")
    b.file("json_pixel_dict", "metadata", "px_dict.tif",
           lambda p: desc(p, u8(seed=140), {"pixel_size_nm": {"x": 4}}), entries=META, expect="either")
    b.file("tiff_res_cm_4e9", "metadata", "res_cm.tif",
           lambda p: _tif(p, u8(seed=141), resolution=(4e9, 4e9), resolutionunit="CENTIMETER", metadata=None),
           entries=META, expect="warn", warn_re=W_PS, note="0.0025 nm per pixel")
    b.file("tiff_res_zero", "metadata", "res_zero.tif",
           lambda p: _res_zero(p), entries=META, expect="ok")


def _res_zero(p: Path) -> None:
    _tif(p, u8(seed=142), resolution=(1, 1), resolutionunit="CENTIMETER", metadata=None)
    buf = p.read_bytes()
    for tag in (282, 283):  # X/YResolution = 0/0
        _, ent = tiff_entries(buf)
        off, typ, cnt, val = ent[tag]
        bb = bytearray(buf)
        struct.pack_into("<II", bb, val, 0, 0)
        buf = bytes(bb)
    p.write_bytes(buf)


# --------------------------------------------------------------------------- MultiSEM mosaics
def _mosaic(b: _Builder) -> None:
    tile = 128
    grid = [(0, 0), (120, 0), (0, 120), (120, 120)]

    def mosaic(cid: str, rows=None, text: str | None = None, tiles=None, sub="section", **kw) -> Case:
        d = b.dir(cid)
        sec = d / sub
        sec.mkdir(parents=True)
        tiles = tiles if tiles is not None else {f"tile_{k}.tif": u8(tile, tile, 200 + k) for k in range(4)}
        for name, a in tiles.items():
            if isinstance(a, bytes):
                _bytes(sec / name, a)
            elif a is not None:
                _tif(sec / name, a)
        if text is None:
            rows = rows if rows is not None else [(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid)]
            text = coords_text(rows)
        (sec / "full_image_coordinates.txt").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        kw.setdefault("entries", FOLDER)
        entries = kw.pop("entries")
        return b.add(Case(cid, "mosaic", tuple(entries), [sec], data_dir=str(sec), **kw))

    mosaic("mosaic_valid", expect="ok", widget="qc widget on a lazy mosaic")
    mosaic("mosaic_negative_coords", rows=[(f"tile_{k}.tif", x - 500, y - 300, 0) for k, (x, y) in enumerate(grid)],
           expect="ok", note="tiles partially left of / above the origin: shifted")
    mosaic("mosaic_fractional", rows=[(f"tile_{k}.tif", x + 0.4, y + 0.6, 0) for k, (x, y) in enumerate(grid)], expect="ok")
    mosaic("mosaic_two_z", rows=[(f"tile_{k}.tif", x, y, k // 2) for k, (x, y) in enumerate(grid)], expect="ok")
    mosaic("mosaic_bom_crlf_header", text="\ufeffpath\tx\ty\tz\r\n# comment\r\n" + "".join(
        f"tile_{k}.tif\t{x}\t{y}\t0\r\n" for k, (x, y) in enumerate(grid)), expect="ok")
    mosaic("mosaic_backslash_paths", rows=[(f".\\tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid)], expect="ok")
    c = mosaic("mosaic_coords_path_given", expect="ok", entries=(READER, SCORE, CORRECT))
    c.paths = [str(Path(c.paths[0]) / "full_image_coordinates.txt")]
    c = mosaic("mosaic_abs_path_inside", rows=[], expect="ok")
    sec = Path(c.paths[0])
    (sec / "full_image_coordinates.txt").write_text(coords_text([(str(sec / f"tile_{k}.tif"), x, y, 0)
                                                                 for k, (x, y) in enumerate(grid)]))
    c = mosaic("mosaic_mfov_subfolders", tiles={}, rows=[], expect="ok")
    sec = Path(c.paths[0])
    for k, (_x, _y) in enumerate(grid):
        _tif(sec / "000001" / f"tile_{k}.tif", u8(tile, tile, 210 + k))
    (sec / "full_image_coordinates.txt").write_text(coords_text([(f"000001/tile_{k}.tif", x, y, 0)
                                                                 for k, (x, y) in enumerate(grid)]))
    mosaic("mosaic_sparse_far_tile", rows=[("tile_0.tif", 0, 0, 0), ("tile_1.tif", 40000, 0, 0)],
           tiles={"tile_0.tif": u8(tile, tile, 220), "tile_1.tif": u8(tile, tile, 221)}, expect="ok",
           entries=(READER, SCORE, WATCH, BATCH), note="legit sparse mosaic: 40128 px wide, 2 tiles")
    mosaic("mosaic_rgb_tiles", tiles={f"tile_{k}.tif": np.repeat(u8(tile, tile, 230 + k)[..., None], 3, -1)
                                      for k in range(4)}, expect="ok", entries=(READER, SCORE, WATCH, BATCH))
    # refusals
    mosaic("mosaic_missing_tile", tiles={f"tile_{k}.tif": u8(tile, tile, 240 + k) for k in range(3)},
           culprit="tile_3.tif", expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"missing|never arrived|not found",
           note="the message lists paths on continuation lines")
    mosaic("mosaic_duplicate_entry", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid)]
           + [("tile_0.tif", 0, 0, 0)], expect="warn", warn_re=r"duplicate|twice|listed", culprit="tile_0.tif",
           expect_by_entry={WATCH: "either", BATCH: "either"})
    mosaic("mosaic_x_1e9", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", 1e9, 120, 0)], culprit="tile_3.tif", known=True,
           expect_by_entry={WATCH: "either", BATCH: "either"},
           note="3.9 M dask chunks: hang", widget="freezes the napari GUI")
    mosaic("mosaic_x_minus_1e7", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", -1e7, 120, 0)], culprit="tile_3.tif", known=True,
           expect_by_entry={WATCH: "either", BATCH: "either"}, note="51 s")
    mosaic("mosaic_y_1e6", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", 0, 1e6, 0)], culprit="tile_3.tif", expect_by_entry={WATCH: "either", BATCH: "either"},
           entries=(READER, SCORE, WATCH), note="1,000,128 x 248 px, ~3900 chunks, all but 4 empty")
    mosaic("mosaic_coord_nan", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", "nan", 120, 0)], culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    mosaic("mosaic_coord_inf", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", "inf", 120, 0)], culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    mosaic("mosaic_coord_text", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
           + [("tile_3.tif", "left", "top", 0)], culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    c = mosaic("mosaic_dotdot_outside", rows=[(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
               + [("../outside/secret.tif", 120, 120, 0)], tiles={f"tile_{k}.tif": u8(tile, tile, 250 + k)
                                                                  for k in range(3)},
               culprit="secret.tif", known=True, expect_by_entry={WATCH: "either", BATCH: "either"})
    _tif(Path(c.root) / "outside" / "secret.tif", u8(tile, tile, 253))
    c = mosaic("mosaic_abs_outside", rows=[], tiles={f"tile_{k}.tif": u8(tile, tile, 254 + k) for k in range(3)},
               culprit="secret.tif", expect_by_entry={WATCH: "either", BATCH: "either"})
    _tif(Path(c.root) / "elsewhere" / "secret.tif", u8(tile, tile, 257))
    (Path(c.paths[0]) / "full_image_coordinates.txt").write_text(coords_text(
        [(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate(grid[:3])]
        + [(str(Path(c.root) / "elsewhere" / "secret.tif"), 120, 120, 0)]))
    mixed = {f"tile_{k}.tif": u8(tile, tile, 260 + k) for k in range(4)}
    mixed["tile_2.tif"] = u16(tile, tile, 262)
    mosaic("mosaic_mixed_dtype", tiles=mixed, culprit="tile_2.tif", known=True,
           expect_by_entry={WATCH: "ok", BATCH: "ok"}, widget="lazy layer fails when drawn")
    mixed = {f"tile_{k}.tif": u8(tile, tile, 264 + k) for k in range(4)}
    mixed["tile_3.tif"] = u8(96, 128, 268)
    mosaic("mosaic_mixed_shape", tiles=mixed, culprit="tile_3.tif", known=True,
           expect_by_entry={WATCH: "ok", BATCH: "ok"}, widget="lazy layer fails when drawn")
    zb = {f"tile_{k}.tif": u8(tile, tile, 270 + k) for k in range(4)}
    zb["tile_1.tif"] = b""
    mosaic("mosaic_zero_byte_tile", tiles=zb, culprit="tile_1.tif", known=True,
           widget="lazy layer fails when drawn")
    import io as _io

    import tifffile

    buf = _io.BytesIO()
    tifffile.imwrite(buf, u8(tile, tile, 275), photometric="minisblack")
    tr = {f"tile_{k}.tif": u8(tile, tile, 276 + k) for k in range(4)}
    tr["tile_2.tif"] = buf.getvalue()[:3000]
    mosaic("mosaic_truncated_tile", tiles=tr, culprit="tile_2.tif", widget="lazy layer fails when drawn")
    bad0 = {f"tile_{k}.tif": u8(tile, tile, 280 + k) for k in range(4)}
    bad0["tile_0.tif"] = b"II*\x00garbage"
    mosaic("mosaic_first_tile_corrupt", tiles=bad0, culprit="tile_0.tif")
    nan_t = {f"tile_{k}.tif": u8(tile, tile, 285 + k) for k in range(4)}
    mosaic("mosaic_nan_float_tile", tiles={**{k: v.astype(np.float32) / 255 for k, v in nan_t.items()},
                                           "tile_3.tif": np.full((tile, tile), np.nan, np.float32)},
           culprit="tile_3.tif", widget="lazy layer fails when drawn")
    mosaic("mosaic_empty_coords", text="", culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    mosaic("mosaic_coords_header_only", text="# path x y z\npath\tx\ty\tz\n", culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    mosaic("mosaic_coords_binary", text=np.random.default_rng(7).bytes(400), culprit="full_image_coordinates.txt",
           expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"full_image_coordinates|coordinates")
    c = mosaic("mosaic_coords_fifo", rows=[])
    cp = Path(c.paths[0]) / "full_image_coordinates.txt"
    cp.unlink()
    os.mkfifo(cp)
    c.culprit = "full_image_coordinates.txt"
    c = mosaic("mosaic_tile_is_dir", tiles={f"tile_{k}.tif": u8(tile, tile, 290 + k) for k in range(3)},
               culprit="tile_3.tif", expect_by_entry={WATCH: "warn", BATCH: "warn"}, warn_re=r"missing|never arrived|not found")
    (Path(c.paths[0]) / "tile_3.tif").mkdir()
    mosaic("mosaic_tiny_tiles", tiles={f"tile_{k}.tif": u8(8, 8, 295 + k) for k in range(4)},
           rows=[(f"tile_{k}.tif", 8 * (k % 2), 8 * (k // 2), 0) for k in range(4)], culprit="tile_0.tif")
    # two sections below one folder; the second's coordinates are broken
    d = b.dir("mosaic_multi_section_one_bad")
    for s in range(2):
        sec = d / "run" / f"s{s}"
        for k in range(2):
            _tif(sec / f"tile_{k}.tif", u8(tile, tile, 300 + 2 * s + k))
        rows = [(f"tile_{k}.tif", 120 * k, 0, s) for k in range(2)]
        if s == 1:
            rows.append(("tile_9.tif", 0, 0, s))
        (sec / "full_image_coordinates.txt").write_text(coords_text(rows))
    b.add(Case("mosaic_multi_section_one_bad", "mosaic", (READER, SCORE, WATCH), [d / "run"], culprit="tile_9.tif",
               data_dir=str(d / "run"), expect_by_entry={WATCH: "either"}))


# --------------------------------------------------------------------------- OME-Zarr
def _zarr(b: _Builder) -> None:
    a2 = u8(128, 128, 400)
    a3 = np.stack([u8(96, 96, 401 + k) for k in range(3)])

    def z(cid, arr, attrs=None, expect="refuse", fmt=2, raw=None, chunks=None, post=None, **kw) -> Case:
        d = b.dir(cid)
        p = write_zarr(d / "img.zarr", arr, attrs, chunks=chunks, fmt=fmt, raw_attrs=raw)
        if post:
            post(p)
        kw.setdefault("entries", ZARR)
        entries = kw.pop("entries")
        return b.add(Case(cid, "zarr", tuple(entries), [p], expect=expect, culprit=kw.pop("culprit", "img.zarr"), **kw))

    z("zarr_valid_ngff04", a2, ngff(2, [4.0, 4.0]), expect="ok", content="texture")
    z("zarr_valid_stack", a3, ngff(3, [40.0, 4.0, 4.0]), expect="ok")
    z("zarr_valid_v3", a2, {"ome": {"version": "0.5", **ngff(2, [4.0, 4.0])}}, fmt=3, expect="ok")
    z("zarr_valid_5d_squeeze", a2[None, None, None], ngff(5, [1, 1, 40, 4, 4]), expect="ok")
    d = b.dir("zarr_plain_array")
    import zarr

    arr = zarr.open_array(str(d / "plain.zarr"), mode="w", shape=a2.shape, dtype=a2.dtype, zarr_format=2)
    arr[...] = a2
    b.add(Case("zarr_plain_array", "zarr", ZARR, [d / "plain.zarr"], expect="ok"))
    z("zarr_multiscales_string", a2, {"multiscales": "abc"}, known=True)
    z("zarr_multiscales_empty_list", a2, {"multiscales": []}, expect="either")
    z("zarr_multiscales_empty_dict", a2, {"multiscales": [{}]})
    z("zarr_datasets_empty", a2, {"multiscales": [{"version": "0.4", "datasets": []}]})
    z("zarr_dataset_missing", a2, ngff(2, [4.0, 4.0], path="7"))
    z("zarr_dataset_path_int", a2, {"multiscales": [{"version": "0.4", "datasets": [{"path": 0}]}]}, expect="either")
    z("zarr_dataset_is_string", a2, {"multiscales": [{"version": "0.4", "datasets": ["0"]}]})
    z("zarr_scale_strings", a2, ngff(2, ["a", "b"]), expect="warn", warn_re=r"scale|pixel size|ignored|metadata")
    z("zarr_scale_is_string", a2, {"multiscales": [{"version": "0.4", "axes": ngff(2, [1, 1])["multiscales"][0]["axes"],
                                                    "datasets": [{"path": "0", "coordinateTransformations": [
                                                        {"type": "scale", "scale": "4,4"}]}]}]},
      expect="warn", warn_re=r"scale|pixel size|ignored|metadata")
    z("zarr_scale_1e-30", a2, ngff(2, [1e-30, 1e-30]), expect="warn", warn_re=r"pixel size|implausib|ignored", known=True)
    z("zarr_z_scale_negative", a3, ngff(3, [-5.0, 4.0, 4.0]), expect="warn", warn_re=r"spacing|implausib|ignored",
      known=True)
    z("zarr_z_scale_nan", a3, None, raw='{"multiscales": [{"version": "0.4", "axes": [{"name": "z", "type": "space", '
      '"unit": "nanometer"}, {"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", '
      '"unit": "nanometer"}], "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", '
      '"scale": [NaN, 4.0, 4.0]}]}]}]}', expect="warn", warn_re=r"spacing|implausib|ignored", known=True)
    z("zarr_xy_scale_zero", a2, ngff(2, [0.0, 0.0]), expect="either")
    z("zarr_axes_mismatch", a2, ngff(3, [40, 4.0, 4.0]), expect="either", note="3 axes for a 2-D array")
    z("zarr_4d_channels", np.stack([a3, a3]), ngff(4, [1, 40, 4, 4]), note="(c, z, y, x) with 2 channels")
    z("zarr_float16_01", texture(128, 128, 402).astype(np.float16), ngff(2, [4.0, 4.0]), expect="warn",
      warn_re=WARN_FLOAT, content="texture", known=True)
    z("zarr_float32_nan", np.where(texture(128, 128, 403) > 0.9, np.nan, texture(128, 128, 403)).astype(np.float32),
      ngff(2, [4.0, 4.0]), chunks=(64, 64))
    z("zarr_bool", texture(128, 128, 404) > 0.5, ngff(2, [4.0, 4.0]))
    z("zarr_int64_huge", (texture(128, 128, 405) * 1e12).astype(np.int64), ngff(2, [4.0, 4.0]))
    z("zarr_empty_dim", np.zeros((0, 64), np.uint8), None)
    z("zarr_corrupt_chunk", a2, ngff(2, [4.0, 4.0]), chunks=(64, 64), culprit="img.zarr",
      post=lambda p: (p / "0" / "1.1").write_bytes(b"\x00garbage-bytes" * 7),
      widget="lazy layer fails when drawn", note="one of 4 chunks is garbage")
    z("zarr_missing_chunk", a2, ngff(2, [4.0, 4.0]), chunks=(64, 64), expect="either",
      post=lambda p: (p / "0" / "0.1").unlink(), note="zarr fills a missing chunk with fill_value (sparse arrays)")
    z("zarr_zattrs_invalid_json", a2, None, raw='{"multiscales": [ {"version": ')
    z("zarr_zarray_invalid_json", a2, ngff(2, [4.0, 4.0]), post=lambda p: (p / "0" / ".zarray").write_text("{nope"))
    d = b.dir("zarr_empty_group")
    zarr.open_group(str(d / "empty.zarr"), mode="w", zarr_format=2)
    b.add(Case("zarr_empty_group", "zarr", ZARR, [d / "empty.zarr"]))
    d = b.dir("zarr_is_a_file")
    _bytes(d / "file.zarr", b"not a folder")
    b.add(Case("zarr_is_a_file", "zarr", ZARR, [d / "file.zarr"], reader_decline_ok=True))


# --------------------------------------------------------------------------- weights and cards
def _weights(b: _Builder) -> None:
    import torch

    src = shipped_weights()
    card0 = json.loads(src.with_suffix(".json").read_text())
    state0 = torch.load(src, map_location="cpu", weights_only=True)

    def wcase(cid: str, card=None, state=None, raw_pt: bytes | None = None, raw_card: bytes | None = None,
              update_sha=True, name="model", expect="refuse", culprit=None, post=None, **kw) -> Case:
        d = b.dir(cid)
        pt = d / f"{name}.pt"
        if raw_pt is not None:
            pt.write_bytes(raw_pt)
        elif state is not None:
            torch.save(state, pt)
        else:
            shutil.copyfile(src, pt)
        c = dict(card0 if card is None or card is False else card)
        if update_sha and pt.is_file():
            c["weights_sha256"] = _sha(pt)
            c["weights_file"] = pt.name
        if raw_card is not None:
            pt.with_suffix(".json").write_bytes(raw_card)
        elif card is not False:
            pt.with_suffix(".json").write_text(json.dumps(c))
        img = _tif(d / "input.tif", u8(seed=500))
        if post:
            post(d, pt)
        return b.add(Case(cid, "weights", WEIGHTS, [img], expect=expect, weights=str(pt), pipeline_correct=True,
                          culprit=culprit or f"{name}.", **kw))

    def arch(**ch) -> dict:
        c = json.loads(json.dumps(card0))
        c["architecture"] = {**c["architecture"], **ch}
        return c

    wcase("weights_valid_copy", expect="ok", culprit=None)
    wcase("weights_valid_nonascii_name", name="modèle_Ω", expect="ok", culprit=None)
    wcase("weights_fp16_tensors", state={k: v.half() for k, v in state0.items()}, expect="ok", culprit=None)
    wcase("card_missing", card=False, culprit="model.json")
    wcase("card_invalid_json", raw_card=b'{"model_type": "gran", ', culprit="model.json")
    wcase("card_empty_object", raw_card=b"{}", culprit="model.json")
    wcase("card_is_list", raw_card=b"[1, 2, 3]", culprit="model.json")
    wcase("card_non_utf8", raw_card=b'{"model_type": "gran\xff\xfe"}', culprit="model.json")
    wcase("card_sha_null", card={**card0, "weights_sha256": None}, update_sha=False, culprit="model.")
    wcase("weights_sha_mismatch", post=lambda d, pt: pt.write_bytes(pt.read_bytes()[:-10] + b"0123456789"))
    raw = src.read_bytes()
    wcase("weights_truncated", raw_pt=raw[: len(raw) // 2])
    wcase("weights_zero_bytes", raw_pt=b"")
    wcase("weights_random_bytes", raw_pt=np.random.default_rng(8).bytes(4096))
    import pickle

    wcase("weights_pickled_object", raw_pt=pickle.dumps({"head.weight": np.zeros(3), "x": complex(1, 2)}),
          known=True, note="PyTorch's multi-paragraph weights_only message")
    wcase("weights_numpy_in_zip", state={"w": torch.zeros(3), "extra": np.arange(3)}, known=True,
          note="a torch zip holding a numpy array: weights_only refuses")
    wcase("card_model_type_unknown", card={**card0, "model_type": "resnet"}, culprit="model.")
    wcase("card_model_type_list", card={**card0, "model_type": ["gran"]}, culprit="model.")
    wcase("card_architecture_string", card={**card0, "architecture": "abc"}, culprit="model.")
    wcase("card_width_huge", card=arch(width=100000), known=True, culprit="model.",
          note="the CPU allocator is asked for ~360 GB")
    wcase("card_width_negative", card=arch(width=-1), known=True, culprit="model.")
    wcase("card_width_string", card=arch(width="abc"), known=True, culprit="model.")
    wcase("card_width_zero", card=arch(width=0), culprit="model.")
    wcase("card_width_float", card=arch(width=32.5), culprit="model.")
    wcase("card_n_groups_huge", card=arch(n_groups=200000), culprit="model.", note="200,000 modules before any check")
    wcase("card_scale_zero", card=arch(scale=0), culprit="model.")
    wcase("card_mask_down_huge", card=arch(mask_down=40), culprit="model.", note="pads every window to 4 * 2**40 px")
    wcase("card_graph_dim_negative", card=arch(graph_dim=-4), culprit="model.")
    wcase("card_unknown_arch_key", card=arch(bogus=1), culprit="model.")
    wcase("card_in_channels_2", card=arch(in_channels=2), culprit="model.")
    wcase("weights_all_nan", state={k: torch.full_like(v, float("nan")) for k, v in state0.items()}, known=True,
          culprit="model.", note="writes an all-zero image, exit 0")
    wcase("weights_all_inf", state={k: torch.full_like(v, float("inf")) for k, v in state0.items()}, culprit="model.")
    st = dict(state0)
    st.pop(sorted(st)[3])
    wcase("weights_missing_tensor", state=st)
    wcase("weights_extra_tensor", state={**state0, "bogus.weight": torch.zeros(2)})
    c = wcase("weights_path_is_dir", card=False)
    Path(c.weights).unlink()
    Path(c.weights).mkdir()
    c = wcase("weights_path_missing")
    Path(c.weights).unlink()
    c = wcase("weights_given_as_card", culprit="model.json")
    c.weights = str(Path(c.weights).with_suffix(".json"))
    c = wcase("card_fifo", card=False, culprit="model.json", note="reading the card blocks")
    os.mkfifo(Path(c.weights).with_suffix(".json"))


# --------------------------------------------------------------------------- non-UTF-8 names
def _nonutf8(b: _Builder) -> None:
    d = b.dir("nonutf8_valid_file")
    name = os.fsdecode(b"sec_\xff\xfe.tif")
    _tif(d / name, u8(seed=600))
    b.add(Case("nonutf8_valid_file", "nonutf8", IMG, [d / name], expect="ok", culprit="sec_",
               expect_by_entry={WATCH: "refuse", BATCH: "refuse"},
               note="watch/batch report and skip names that are not UTF-8 (the journal holds UTF-8 text)"))
    d = b.dir("nonutf8_corrupt_file")
    name = os.fsdecode(b"bad_\xff.tif")
    _bytes(d / name, b"II*\x00junk")
    b.add(Case("nonutf8_corrupt_file", "nonutf8", IMG, [d / name], culprit="bad_", known=True,
               note="printing the message crashed score and watch"))
    d = b.dir("nonutf8_folder_stack")
    for k in range(2):
        _tif(d / "stk" / os.fsdecode(b"z\xe9" + str(k).encode() + b".tif"), u8(128, 128, 601 + k))
    b.add(Case("nonutf8_folder_stack", "nonutf8", FOLDER, [d / "stk"], expect="ok", data_dir=str(d / "stk"),
               culprit="z", expect_by_entry={WATCH: "refuse", BATCH: "refuse"}))
    d = b.dir("nonutf8_mosaic_latin1")
    sec = d / "section"
    rows = []
    for k, (x, y) in enumerate([(0, 0), (120, 0)]):
        nb = b"tile_\xe9" + str(k).encode() + b".tif"
        _tif(sec / os.fsdecode(nb), u8(128, 128, 603 + k))
        rows.append(nb + b"\t" + str(x).encode() + b"\t" + str(y).encode() + b"\t0\n")
    (sec / "full_image_coordinates.txt").write_bytes(b"".join(rows))
    b.add(Case("nonutf8_mosaic_latin1", "nonutf8", FOLDER, [sec], expect="ok", data_dir=str(sec),
               culprit="tile_", expect_by_entry={WATCH: "refuse", BATCH: "refuse"},
               note="tile names in Latin-1 on disk and in the coordinates file"))
    d = b.dir("nonutf8_watch_dir")
    sub = d / os.fsdecode(b"acq_\xff")
    _bytes(sub / "bad.tif", b"II*\x00junk")
    b.add(Case("nonutf8_watch_dir", "nonutf8", (WATCH, BATCH), [sub / "bad.tif"], culprit="bad.tif",
               batch_inputs=[str(d)], known=True, note="section name is not UTF-8"))


# --------------------------------------------------------------------------- permissions (run without DAC capabilities)
def _permissions(b: _Builder) -> None:
    d = b.dir("perm_unreadable_file")
    p = _tif(d / "locked.tif", u8(seed=700))
    os.chmod(p, 0)
    b.add(Case("perm_unreadable_file", "permission", IMG, [p], privs="nodac"))
    d = b.dir("perm_unreadable_folder")
    for k in range(2):
        _tif(d / "stk" / f"z{k}.tif", u8(128, 128, 701 + k))
    os.chmod(d / "stk", 0o333)
    b.add(Case("perm_unreadable_folder", "permission", FOLDER, [d / "stk"], privs="nodac", culprit="stk",
               data_dir=str(d / "stk"), known=True, note="watch: '0 new, 0 done', exit 0; reader: '.zattrs' probe"))
    d = b.dir("perm_untraversable_folder")
    for k in range(2):
        _tif(d / "stk" / f"z{k}.tif", u8(128, 128, 703 + k))
    os.chmod(d / "stk", 0o644)
    b.add(Case("perm_untraversable_folder", "permission", FOLDER, [d / "stk"], privs="nodac", culprit="stk",
               data_dir=str(d / "stk")))
    d = b.dir("perm_watch_subfolder")
    _tif(d / "acq" / "ok" / "t0.tif", u8(seed=705))
    _tif(d / "acq" / "locked" / "t1.tif", u8(seed=706))
    os.chmod(d / "acq" / "locked", 0)
    b.add(Case("perm_watch_subfolder", "permission", (WATCH, BATCH), [d / "acq"], privs="nodac", culprit="locked",
               data_dir=str(d / "acq"), note="one unreadable subfolder of the watched folder"))
    d = b.dir("perm_mosaic_tile")
    sec = d / "section"
    for k, (_x, _y) in enumerate([(0, 0), (120, 0), (0, 120), (120, 120)]):
        _tif(sec / f"tile_{k}.tif", u8(128, 128, 707 + k))
    (sec / "full_image_coordinates.txt").write_text(coords_text(
        [(f"tile_{k}.tif", x, y, 0) for k, (x, y) in enumerate([(0, 0), (120, 0), (0, 120), (120, 120)])]))
    os.chmod(sec / "tile_2.tif", 0)
    b.add(Case("perm_mosaic_tile", "permission", FOLDER, [sec], privs="nodac", culprit="tile_2.tif", data_dir=str(sec),
               known=True, widget="lazy layer fails when drawn"))
    d = b.dir("perm_coords_file")
    sec = d / "section"
    _tif(sec / "tile_0.tif", u8(128, 128, 711))
    (sec / "full_image_coordinates.txt").write_text("tile_0.tif\t0\t0\t0\n")
    os.chmod(sec / "full_image_coordinates.txt", 0)
    b.add(Case("perm_coords_file", "permission", (READER, SCORE, WATCH), [sec], privs="nodac",
               culprit="full_image_coordinates.txt", data_dir=str(sec), expect_by_entry={WATCH: "either"}))
    d = b.dir("perm_zarr_folder")
    write_zarr(d / "img.zarr", u8(128, 128, 712), ngff(2, [4.0, 4.0]))
    os.chmod(d / "img.zarr", 0)
    b.add(Case("perm_zarr_folder", "permission", ZARR, [d / "img.zarr"], privs="nodac", culprit="img.zarr", known=True))
    d = b.dir("perm_weights_file")
    src = shipped_weights()
    shutil.copyfile(src, d / "locked.pt")
    shutil.copyfile(src.with_suffix(".json"), d / "locked.json")
    os.chmod(d / "locked.pt", 0)
    img = _tif(d / "input.tif", u8(seed=713))
    b.add(Case("perm_weights_file", "permission", WEIGHTS, [img], privs="nodac", weights=str(d / "locked.pt"),
               pipeline_correct=True, culprit="locked.pt"))
    # unwritable output folder
    d = b.dir("perm_output_folder")
    img = _tif(d / "input.tif", u8(seed=714))
    ro = d / "readonly"
    ro.mkdir()
    os.chmod(ro, 0o555)
    b.add(Case("perm_output_folder", "permission", (SCORE, CORRECT, TRAIN, WATCH, BATCH), [img], privs="nodac",
               culprit="readonly", data_dir=str(d), batch_inputs=[str(img)],
               output={SCORE: str(ro / "scores.csv"), CORRECT: str(ro / "out.tif"), TRAIN: str(ro / "run"),
                       WATCH: str(ro / "wout"), BATCH: str(ro / "bout")}))


# --------------------------------------------------------------------------- full disk (RLIMIT_FSIZE)
def _fulldisk(b: _Builder) -> None:
    d = b.dir("fsize_score_csv")
    img = _tif(d / "big.tif", u8(1024, 1024, 800))
    b.add(Case("fsize_score_csv", "fulldisk", (SCORE,), [img], fsize=8192, culprit="scores.csv",
               options={SCORE: ["--tile", "16", "--metric", "autocorr"]}, note="4096 CSV rows, file size limit 8 kB"))
    d = b.dir("fsize_correct_out")
    img = _tif(d / "input.tif", u8(seed=801))
    b.add(Case("fsize_correct_out", "fulldisk", (CORRECT,), [img], fsize=16384, culprit="corrected.tif"))
    d = b.dir("fsize_watch_startup")
    img = _tif(d / "input.tif", u8(seed=802))
    b.add(Case("fsize_watch_startup", "fulldisk", (WATCH, BATCH), [img], fsize=2048, culprit="out", known=True,
               note="the journal cannot be created"))
    d = b.dir("fsize_watch_corrected")
    img = _tif(d / "input.tif", u16(512, 512, 803))
    b.add(Case("fsize_watch_corrected", "fulldisk", (WATCH,), [img], fsize=300_000, culprit="input",
               pipeline_correct=True, options={WATCH: ["--correct-threshold", "1e9", "--retake-threshold=-1e9"]},
               expect="either", note="journal fits, the corrected 512 kB tile does not"))
    d = b.dir("fsize_train_out")
    img = _tif(d / "input.tif", u8(seed=804))
    b.add(Case("fsize_train_out", "fulldisk", (TRAIN,), [img], fsize=65536, culprit="model_"))


# --------------------------------------------------------------------------- outputs equal to inputs / existing outputs
def _out_eq_in(b: _Builder) -> None:
    def one(cid, entry, out_name=None, overwrite=True, culprit=None, opts=None, setup=None, entries=None,
            expect="refuse", **kw) -> Case:
        d = b.dir(cid)
        img = _tif(d / "input.tif", u8(seed=900 + len(b.cases)))
        outp = d / out_name if out_name else img
        if setup:
            setup(d, img, outp)
        options = list(opts or []) + (["--overwrite"] if overwrite and entry in (SCORE, CORRECT) else [])
        return b.add(Case(cid, "out_eq_in", tuple(entries or (entry,)), [img], expect=expect,
                          culprit=culprit or outp.name, output={entry: str(outp)}, options={entry: options}, **kw))

    one("score_csv_is_input_overwrite", SCORE, known=True)
    one("score_csv_is_input", SCORE, overwrite=False)
    one("score_csv_exists", SCORE, "old.csv", overwrite=False,
        setup=lambda d, i, o: o.write_text("file,score\nprevious,1\n"))
    one("score_csv_is_folder", SCORE, "somefolder", overwrite=False, setup=lambda d, i, o: o.mkdir())
    one("score_csv_missing_folder", SCORE, "nope/scores.csv", overwrite=False, culprit="nope")
    one("correct_out_is_input", CORRECT, overwrite=False)
    one("correct_out_is_input_overwrite", CORRECT)
    one("correct_out_hardlink_overwrite", CORRECT, "hard.tif", setup=lambda d, i, o: os.link(i, o))
    one("correct_out_symlink_overwrite", CORRECT, "soft.tif", setup=lambda d, i, o: os.symlink(i, o))
    one("correct_out_exists", CORRECT, "old.tif", overwrite=False, setup=lambda d, i, o: _tif(o, u8(seed=950)))
    one("correct_out_png", CORRECT, "out.png", overwrite=False, note="unsupported output type")
    one("correct_out_missing_folder", CORRECT, "nope/out.tif", overwrite=False, culprit="nope")
    # writes into a multi-file input
    d = b.dir("score_csv_over_coords")
    sec = d / "section"
    for k, (_x, _y) in enumerate([(0, 0), (120, 0)]):
        _tif(sec / f"tile_{k}.tif", u8(128, 128, 960 + k))
    (sec / "full_image_coordinates.txt").write_text(coords_text([("tile_0.tif", 0, 0, 0), ("tile_1.tif", 120, 0, 0)]))
    b.add(Case("score_csv_over_coords", "out_eq_in", (SCORE,), [sec], culprit="full_image_coordinates.txt",
               output={SCORE: str(sec / "full_image_coordinates.txt")}, options={SCORE: ["--overwrite"]},
               note="the CSV replaces the mosaic's coordinates file"))
    d = b.dir("correct_out_over_mosaic_tile")
    sec = d / "section"
    for k, (_x, _y) in enumerate([(0, 0), (120, 0)]):
        _tif(sec / f"tile_{k}.tif", u8(128, 128, 962 + k))
    (sec / "full_image_coordinates.txt").write_text(coords_text([("tile_0.tif", 0, 0, 0), ("tile_1.tif", 120, 0, 0)]))
    b.add(Case("correct_out_over_mosaic_tile", "out_eq_in", (CORRECT,), [sec], culprit="tile_1.tif",
               output={CORRECT: str(sec / "tile_1.tif")}, options={CORRECT: ["--overwrite"]}))
    d = b.dir("correct_out_over_stack_member")
    for k in range(2):
        _tif(d / "stk" / f"z{k}.tif", u8(128, 128, 964 + k))
    b.add(Case("correct_out_over_stack_member", "out_eq_in", (CORRECT,), [d / "stk"], culprit="z0.tif",
               output={CORRECT: str(d / "stk" / "z0.tif")}, options={CORRECT: ["--overwrite"]}))
    d = b.dir("correct_out_into_stack_folder")
    for k in range(2):
        _tif(d / "stk" / f"z{k}.tif", u8(128, 128, 966 + k))
    b.add(Case("correct_out_into_stack_folder", "out_eq_in", (CORRECT,), [d / "stk"], culprit="stk",
               output={CORRECT: str(d / "stk" / "z9_corrected.tif")},
               note="a new file in the input folder becomes part of the stack next time"))
    d = b.dir("train_out_is_data")
    for k in range(2):
        _tif(d / "data" / f"s{k}.tif", u8(seed=968 + k))
    b.add(Case("train_out_is_data", "out_eq_in", (TRAIN,), [d / "data"], culprit="data",
               output={TRAIN: str(d / "data")}, note="checkpoints and model_*.pt written into the data folder"))
    d = b.dir("train_out_existing_run")
    img = _tif(d / "data" / "s0.tif", u8(seed=970))
    run = d / "oldrun"
    run.mkdir()
    (run / "metrics.csv").write_text("step,elapsed_s,loss,lr,val_psnr,val_ssim\n1000,60,0.01,1e-4,30,0.9\n")
    shutil.copyfile(shipped_weights(), run / "model_best.pt")
    shutil.copyfile(shipped_weights().with_suffix(".json"), run / "model_best.json")
    b.add(Case("train_out_existing_run", "out_eq_in", (TRAIN,), [d / "data"], culprit="oldrun",
               output={TRAIN: str(run)}, note="a previous run's metrics.csv and model_best.pt are replaced silently"))
    d = b.dir("watch_out_is_dir")
    _tif(d / "acq" / "t.tif", u8(seed=971))
    b.add(Case("watch_out_is_dir", "out_eq_in", (WATCH, BATCH), [d / "acq"], culprit="--out", data_dir=str(d / "acq"),
               output={WATCH: str(d / "acq"), BATCH: str(d / "acq")}))
    d = b.dir("watch_out_is_parent")
    _tif(d / "acq" / "t.tif", u8(seed=972))
    b.add(Case("watch_out_is_parent", "out_eq_in", (WATCH,), [d / "acq"], culprit="--out", data_dir=str(d / "acq"),
               output={WATCH: str(d)}))
    d = b.dir("watch_out_inside_dir")
    _tif(d / "acq" / "t.tif", u8(seed=973))
    b.add(Case("watch_out_inside_dir", "out_eq_in", (WATCH,), [d / "acq"], expect="either", data_dir=str(d / "acq"),
               output={WATCH: str(d / "acq" / "emdeblur-out")},
               note="OUT inside DIR is excluded from the scan (allowed) but adds files to the input folder"))
    d = b.dir("batch_out_is_file_folder")
    img = _tif(d / "acq" / "t.tif", u8(seed=974))
    b.add(Case("batch_out_is_file_folder", "out_eq_in", (BATCH,), [img], expect="either", batch_inputs=[str(img)],
               output={BATCH: str(d / "acq")}, note="--out is the folder holding the input tile"))


# --------------------------------------------------------------------------- wrong extensions
def _extensions(b: _Builder) -> None:
    import io as _io

    import imageio.v3 as iio
    import tifffile

    png = iio.imwrite("<bytes>", u8(seed=1000), extension=".png")
    buf = _io.BytesIO()
    tifffile.imwrite(buf, u8(seed=1001), photometric="minisblack")
    tif = buf.getvalue()
    jpg = iio.imwrite("<bytes>", u8(seed=1002), extension=".jpg")
    b.file("ext_png_named_tif", "extension", "really_png.tif", lambda p: _bytes(p, png), expect="either")
    b.file("ext_tif_named_png", "extension", "really_tif.png", lambda p: _bytes(p, tif), expect="either")
    b.file("ext_jpg_named_png", "extension", "really_jpg.png", lambda p: _bytes(p, jpg), expect="either")
    b.file("ext_text_named_tif", "extension", "notes.tif", lambda p: _bytes(p, b"x y z\n1 2 3\n"))
    b.file("ext_tif_gz", "extension", "sec.tif.gz", lambda p: _bytes(p, gzip.compress(tif)), entries=IMG_NOPIPE,
           reader_decline_ok=True)
    b.file("ext_none", "extension", "section_no_ext", lambda p: _bytes(p, tif), entries=IMG_NOPIPE,
           reader_decline_ok=True, expect="either")
    b.file("ext_npy", "extension", "sec.npy", lambda p: np.save(p, u8(seed=1003)), entries=IMG_NOPIPE,
           reader_decline_ok=True)
    b.file("ext_gif", "extension", "sec.gif", lambda p: _img(p, u8(seed=1004)), entries=IMG_NOPIPE,
           reader_decline_ok=True)
    b.file("ext_ome_tif_plain", "extension", "plain.ome.tif", lambda p: _bytes(p, tif), expect="ok")


# --------------------------------------------------------------------------- train-only data folders
def _train_only(b: _Builder) -> None:
    d = b.dir("train_one_bad_image")
    _tif(d / "data" / "a_good.tif", u8(seed=1100))
    _bytes(d / "data" / "b_bad.tif", b"II*\x00" + b"\0" * 40)
    b.add(Case("train_one_bad_image", "train", (TRAIN,), [d / "data"], culprit="b_bad.tif"))
    d = b.dir("train_images_too_small")
    for k in range(3):
        _tif(d / "data" / f"s{k}.tif", u8(64, 64, 1101 + k))
    b.add(Case("train_images_too_small", "train", (TRAIN,), [d / "data"], culprit="data"))
    d = b.dir("train_nan_image")
    a = texture(256, 256, 1104).astype(np.float32)
    a[100:140, 100:140] = np.nan
    _tif(d / "data" / "nan.tif", a)
    b.add(Case("train_nan_image", "train", (TRAIN,), [d / "data"], culprit="nan.tif",
               note="NaN pixels reach the loss"))
    d = b.dir("train_float_wide")
    _tif(d / "data" / "wide.tif", (texture(256, 256, 1105) * 4000 - 100).astype(np.float32))
    b.add(Case("train_float_wide", "train", (TRAIN,), [d / "data"], expect="warn", warn_re=WARN_FLOAT,
               note="floats outside [0, 1] are taken as they are by the training loader"))
    d = b.dir("train_glob_no_match")
    (d / "data").mkdir()
    b.add(Case("train_glob_no_match", "train", (TRAIN,), [d / "data" / "*.png"], culprit="*.png"))
    d = b.dir("train_subfolders_only")
    _tif(d / "data" / "sub" / "s.tif", u8(seed=1106))
    b.add(Case("train_subfolders_only", "train", (TRAIN,), [d / "data"], culprit="data"))
    d = b.dir("train_mixed_8_16")
    _tif(d / "data" / "a8.tif", u8(seed=1107))
    _img(d / "data" / "b16.png", u16(seed=1108))
    b.add(Case("train_mixed_8_16", "train", (TRAIN,), [d / "data"], expect="ok"))
    d = b.dir("train_init_weights_nan")
    import torch

    src = shipped_weights()
    st = torch.load(src, map_location="cpu", weights_only=True)
    pt = d / "nan.pt"
    torch.save({k: torch.full_like(v, float("nan")) for k, v in st.items()}, pt)
    card = json.loads(src.with_suffix(".json").read_text())
    card["weights_sha256"] = _sha(pt)
    pt.with_suffix(".json").write_text(json.dumps(card))
    _tif(d / "data" / "s.tif", u8(seed=1109))
    b.add(Case("train_init_weights_nan", "train", (TRAIN,), [d / "data"], culprit="nan.pt",
               options={TRAIN: ["--init-weights", str(pt)]}))


# --------------------------------------------------------------------------- watch-only situations
def _watch_only(b: _Builder) -> None:
    d = b.dir("watch_zero_byte_file")
    _tif(d / "acq" / "t0.tif", u8(seed=1200))
    _bytes(d / "acq" / "t1.tif", b"")
    b.add(Case("watch_zero_byte_file", "watch", (WATCH, BATCH), [d / "acq"], culprit="t1.tif", data_dir=str(d / "acq"),
               known=True, note="--once never exits"))
    d = b.dir("watch_fifo")
    _tif(d / "acq" / "t0.tif", u8(seed=1201))
    os.mkfifo(d / "acq" / "t1.tif")
    b.add(Case("watch_fifo", "watch", (WATCH, BATCH), [d / "acq"], culprit="t1.tif", data_dir=str(d / "acq"),
               known=True, note="--once never exits"))
    d = b.dir("watch_marker_zero_byte")
    _tif(d / "acq" / "t0.tif", u8(seed=1202))
    _bytes(d / "acq" / "t1.tif", b"")
    _bytes(d / "acq" / "t1.tif.done", b"")
    b.add(Case("watch_marker_zero_byte", "watch", (WATCH,), [d / "acq"], culprit="t1.tif", data_dir=str(d / "acq"),
               note="marked complete but empty"))
    d = b.dir("watch_unreadable_root")
    _tif(d / "acq" / "t0.tif", u8(seed=1203))
    os.chmod(d / "acq", 0)
    b.add(Case("watch_unreadable_root", "watch", (WATCH, BATCH), [d / "acq"], culprit="acq", data_dir=str(d / "acq"),
               privs="nodac", known=True, note="'0 new, 0 done' and exit 0"))
    d = b.dir("watch_missing_dir")
    b.add(Case("watch_missing_dir", "watch", (WATCH, BATCH), [d / "nope"], culprit="nope", data_dir=str(d / "nope")))
    d = b.dir("watch_symlink_outside")
    _tif(d / "other" / "t_out.tif", u8(seed=1204))
    (d / "acq").mkdir()
    _tif(d / "acq" / "t0.tif", u8(seed=1205))
    os.symlink(d / "other" / "t_out.tif", d / "acq" / "link.tif")
    b.add(Case("watch_symlink_outside", "watch", (WATCH, BATCH), [d / "acq"], expect="either", data_dir=str(d / "acq")))
    d = b.dir("watch_many_bad")
    for k in range(6):
        _bytes(d / "acq" / f"bad{k}.tif", b"II*\x00" + bytes([k]) * 50)
    b.add(Case("watch_many_bad", "watch", (WATCH, BATCH), [d / "acq"], culprit="bad0.tif", data_dir=str(d / "acq")))
    d = b.dir("watch_not_a_dir")
    img = _tif(d / "input.tif", u8(seed=1206))
    b.add(Case("watch_not_a_dir", "watch", (WATCH,), [img], culprit="input.tif", data_dir=str(img)))


# --------------------------------------------------------------------------- bad options
def _options(b: _Builder) -> None:
    spec = {
        SCORE: [
            ("tile_zero", ["--tile", "0"], "--tile"), ("tile_negative", ["--tile", "-8"], "--tile"),
            ("tile_4", ["--tile", "4"], "--tile"), ("tile_huge", ["--tile", "1000000"], None),
            ("tile_text", ["--tile", "abc"], "--tile"),
            ("correct_threshold_nan", ["--correct-threshold", "nan"], "--correct-threshold"),
            ("correct_threshold_inf", ["--correct-threshold", "inf"], "--correct-threshold"),
            ("retake_above_correct", ["--correct-threshold", "0.1", "--retake-threshold", "0.5"], "threshold"),
            ("metric_bogus", ["--metric", "bogus"], "--metric"),
        ],
        CORRECT: [
            ("infer_tile_10", ["--infer-tile", "10"], "--infer-tile"),
            ("overlap_negative", ["--overlap", "-1"], "--overlap"),
            ("overlap_too_big", ["--overlap", "400"], "--overlap"),
            ("batch_zero", ["--batch", "0"], "--batch"),
            ("value_range_text", ["--value-range", "abc"], "--value-range"),
            ("value_range_reversed", ["--value-range", "5,1"], "--value-range"),
            ("value_range_nan", ["--value-range", "nan,1"], "--value-range"),
            ("tile_size_8", ["--tile-size", "8"], "--tile-size"),
            ("threshold_text", ["--threshold", "abc"], "--threshold"),
            ("threshold_nan", ["--threshold", "nan"], "--threshold"),
            ("metric_bogus", ["--metric", "bogus"], "--metric"),
            ("device_cuda", ["--device", "cuda"], "cuda"),
        ],
        WATCH: [
            ("tile_zero", ["--tile", "0"], "--tile"),
            ("stable_negative", ["--stable-seconds", "-1"], "--stable-seconds"),
            ("poll_negative", ["--poll", "-1"], "--poll"),
            ("poll_nan", ["--poll", "nan"], "--poll"),
            ("max_failures_negative", ["--max-failures", "-1"], "--max-failures"),
            ("calibrate_negative", ["--calibrate", "-1"], "--calibrate"),
            ("threads_negative", ["--threads", "-1"], "--threads"),
            ("correct_threshold_nan", ["--correct-threshold", "nan"], "--correct-threshold"),
            ("metric_bogus", ["--metric", "bogus"], "--metric"),
            ("value_range_text", ["--value-range", "abc"], "--value-range"),
            ("device_cuda", ["--device", "cuda", "--correct-threshold", "1e9", "--retake-threshold=-1e9"], "cuda"),
            ("report_interval_nan", ["--report-interval", "nan"], "--report-interval"),
        ],
        BATCH: [
            ("workers_negative", ["--workers", "-1"], "--workers"),
            ("tile_zero", ["--tile", "0"], "--tile"),
            ("metric_bogus", ["--metric", "bogus"], "--metric"),
        ],
        TRAIN: [
            ("steps_zero", ["--steps", "0"], "--steps"),
            ("crop_8", ["--crop", "8"], "--crop"),
            ("crop_zero", ["--crop", "0"], "--crop"),
            ("batch_zero", ["--batch", "0"], "--batch"),
            ("lr_nan", ["--lr", "nan"], "--lr"),
            ("lr_negative", ["--lr", "-1"], "--lr"),
            ("arch_width_negative", ["--arch", '{"width": -1}'], "--arch"),
            ("arch_not_object", ["--arch", "[1]"], "--arch"),
            ("arch_unknown_key", ["--arch", '{"bogus": 1}'], "--arch"),
            ("ranges_unknown_key", ["--ranges", '{"bogus": 1}'], "--ranges"),
            ("threads_negative", ["--threads", "-1"], "--threads"),
            ("checkpoint_every_zero", ["--checkpoint-every", "0"], "--checkpoint-every"),
            ("log_every_zero", ["--log-every", "0"], "--log-every"),
            ("val_crops_zero_with_val", ["--val-crops", "0", "--val", "__DATA__"], "--val-crops"),
        ],
    }
    for entry, items in spec.items():
        for name, opts, culprit in items:
            cid = f"opt_{entry}_{name}"
            d = b.dir(cid)
            img = _tif(d / "input.tif", u8(seed=1300))
            opts = [str(d) if o == "__DATA__" else o for o in opts]
            expect = "refuse"
            if name in ("tile_huge", "crop_8", "val_crops_zero_with_val"):
                expect = "either"
            b.add(Case(cid, "option", (entry,), [img], expect=expect, culprit=culprit,
                       options={entry: opts}, known=name in ("correct_threshold_nan", "infer_tile_10"),
                       pipeline_correct=entry == WATCH and name == "device_cuda"))


def summary(cases: list[Case]) -> dict:
    from collections import Counter

    return {"cases": len(cases), "by_class": dict(Counter(c.cls for c in cases)),
            "by_entry": dict(Counter(e for c in cases for e in c.entries))}


if __name__ == "__main__":
    import sys
    import tempfile
    import time

    t0 = time.monotonic()
    cs = make_corpus(sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.gettempdir()) / "emdeblur-badinput"))
    print(json.dumps(summary(cs), indent=1))
    print(f"generated in {time.monotonic() - t0:.1f} s")
