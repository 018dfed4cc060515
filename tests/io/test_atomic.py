"""core.atomic: atomic publish, no temp files left behind, no race with a concurrent creator."""

import os
import stat

import pytest

from napari_emdeblur.io.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_new_file_written_with_umask_mode(tmp_path):
    p = atomic_write_text(tmp_path / "a.csv", "x,y\r\n1,2\n")
    assert p == tmp_path / "a.csv"
    assert p.read_bytes() == b"x,y\r\n1,2\n"  # no newline translation
    assert _names(tmp_path) == ["a.csv"]  # temp name removed after the hard-link publish
    mode = stat.S_IMODE(p.stat().st_mode)
    um = os.umask(0o022)
    os.umask(um)
    assert mode != 0o600 and mode == 0o666 & ~um
    assert p.stat().st_nlink == 1
    q = atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01", mode=0o640)
    assert stat.S_IMODE(q.stat().st_mode) == 0o640


def test_refuses_existing_file_and_leaves_it_intact(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="already exists"):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert _names(tmp_path) == ["a.txt"]


def test_overwrite_replaces(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"old")
    atomic_write_bytes(p, b"new", overwrite=True, sync_dir=True)
    assert p.read_bytes() == b"new"
    assert _names(tmp_path) == ["a.txt"]


def test_failing_writer_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(tmp_path / "a.tif", writer)
    assert _names(tmp_path) == []
    p = tmp_path / "b.tif"
    p.write_bytes(b"keep")
    with pytest.raises(RuntimeError):
        atomic_write(p, writer, overwrite=True)
    assert p.read_bytes() == b"keep" and _names(tmp_path) == ["b.tif"]


def test_file_created_meanwhile_is_not_replaced(tmp_path):
    p = tmp_path / "a.json"

    def writer(f):
        p.write_bytes(b"theirs")  # someone else creates the target while we write
        f.write(b"ours")

    with pytest.raises(FileExistsError):
        atomic_write(p, writer)
    assert p.read_bytes() == b"theirs"
    assert _names(tmp_path) == ["a.json"]


def test_missing_folder_and_makedirs(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "no" / "a.bin", b"x")
    p = atomic_write_bytes(tmp_path / "no" / "a.bin", b"x", makedirs=True)
    assert p.read_bytes() == b"x"


def test_sha256_file(tmp_path):
    p = atomic_write_bytes(tmp_path / "a.bin", b"abc" * 1000)
    import hashlib

    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert sha256_file(p, chunk=7) == sha256_file(p)


def test_fallback_without_hard_links(tmp_path, monkeypatch):
    """File systems without hard links (EPERM/ENOTSUP): check + os.replace instead."""
    import errno

    def no_link(*a, **k):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    p = atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert p.read_bytes() == b"x" and _names(tmp_path) == ["a.bin"]
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"y")
    assert p.read_bytes() == b"x" and _names(tmp_path) == ["a.bin"]
