"""The one output writer (synchuman_core.export.writer): names, numbering, no overwrite, no partial file."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synchuman_core.errors import OutputError
from synchuman_core.export import writer
from synchuman_core.export.paths import MAX_NAME_BYTES, sanitize_name
from synchuman_core.export.writer import (
    check_output_location,
    replace_atomically,
    reserve_stem,
    write_file,
)

OBJ = (".obj", ".mtl", ".png")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha256 of its bytes (symlinks by target)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_nothing_partial(folder: Path) -> None:
    leftovers = [p.name for p in folder.rglob("*") if p.name.endswith(writer.PART)]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# -- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("gauss\nians", "gauss_ians"),
        ("a\tb\r\nc\x00d\x1b", "a_b__c_d_"),
        ("CON", "_CON"),
        ("con.glb", "_con.glb"),
        ("LPT\u00b9", "_LPT\u00b9"),
        ("  . hidden .  ", "hidden"),
        ("my mesh: v2?", "my mesh_ v2_"),
        ('a<b>c"d|e*f', "a_b_c_d_e_f"),
        ("zero\u200bwidth\u2028sep", "zero_width_sep"),
        ("", "mesh"),
        ("..", "mesh"),
    ],
)
def test_sanitize_name_cases(raw, expected):
    assert sanitize_name(raw) == expected


def test_sanitize_name_limits_bytes_not_characters():
    for raw in ("x" * 400, "\u00e9" * 400, "\U0001f600" * 300, "\u4eba" * 300):
        s = sanitize_name(raw)
        assert len(s.encode("utf-8")) <= MAX_NAME_BYTES
        assert s and raw.startswith(s.rstrip("_")[:1])  # cut, never re-encoded into garbage
        s.encode("utf-8").decode("utf-8")


# -- reservation, numbering, commit ------------------------------------------------------------------


def test_companions_numbered_together_and_input_photo_untouched(tmp_path):
    photo = tmp_path / "person.png"
    photo.write_bytes(b"the user's photo")
    before = snapshot(tmp_path)
    with reserve_stem(tmp_path, "person.obj", OBJ) as out:
        assert out.stem == "person_00001"  # person.png exists: the whole set moves on
        for s in OBJ:
            out.write_bytes(s, s.encode())
    assert [p.name for p in out.paths] == ["person_00001.obj", "person_00001.mtl", "person_00001.png"]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert_nothing_partial(tmp_path)


def test_second_result_never_overwrites_first(tmp_path):
    first = write_file(tmp_path, "smoke", ".glb", b"one")
    second = write_file(tmp_path, "smoke", ".glb", b"two")
    assert (first.name, second.name) == ("smoke.glb", "smoke_00001.glb")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"


def test_final_names_known_before_writing_and_unused_reservations_released(tmp_path):
    with reserve_stem(tmp_path, "r", (".glb", "_gaussians.ply", "_color_front.png")) as out:
        assert out.path("_gaussians.ply") == tmp_path / "r_gaussians.ply"
        assert (tmp_path / ".r.glb.part").exists()  # the reservation holds the name
        out.write_bytes(".glb", b"g")
    assert sorted(os.listdir(tmp_path)) == ["r.glb"]
    with pytest.raises(KeyError):
        out.path(".obj")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, MemoryError])
def test_any_failure_or_interrupt_leaves_nothing(tmp_path, exc):
    (tmp_path / "keep.txt").write_bytes(b"keep")
    before = snapshot(tmp_path)
    with pytest.raises(exc):
        with reserve_stem(tmp_path / "new" / "deeper", "r", (".glb", "_gaussians.ply")) as out:
            out.write_bytes(".glb", b"complete")
            raise exc()
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "new").exists()  # folders it created are gone too


def test_disk_full_midway_is_our_error_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "r.glb").write_bytes(b"older result")
    before = snapshot(tmp_path)

    def fills_up(fh, data):  # writes half, then the disk is full
        fh.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_all", fills_up)
    with pytest.raises(OutputError, match=r"disk is full.*--output") as e:
        with reserve_stem(tmp_path, "r", (".glb", "_gaussians.ply"), what="-o/--output") as out:
            out.write_bytes("_gaussians.ply", b"x" * 1000)
    assert e.value.errno == errno.ENOSPC
    assert snapshot(tmp_path) == before
    assert_nothing_partial(tmp_path)


def test_name_taken_while_writing_is_refused_and_nothing_clobbered(tmp_path):
    with pytest.raises(OutputError, match="appeared while"):
        with reserve_stem(tmp_path, "r", (".obj", ".mtl")) as out:
            out.write_bytes(".obj", b"ours")
            out.write_bytes(".mtl", b"ours")
            (tmp_path / "r.mtl").write_bytes(b"someone else's")  # a program ignoring our reservation
    assert snapshot(tmp_path) == {"r.mtl": hashlib.sha256(b"someone else's").hexdigest()}
    assert_nothing_partial(tmp_path)


def test_without_hard_links_still_no_clobber(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    a = write_file(tmp_path, "r", ".ply", b"a")
    b = write_file(tmp_path, "r", ".ply", b"b")
    assert (a.read_bytes(), b.read_bytes(), b.name) == (b"a", b"b", "r_00001.ply")
    assert_nothing_partial(tmp_path)


def test_write_with_for_path_based_writers(tmp_path):
    from PIL import Image

    with reserve_stem(tmp_path, "v", ("_color_front.png",)) as out:
        out.write_with("_color_front.png", lambda p: Image.new("RGB", (4, 4), (255, 0, 0)).save(p, format="PNG"))
    assert Image.open(tmp_path / "v_color_front.png").getpixel((0, 0)) == (255, 0, 0)


def test_suffixes_are_checked():
    for bad in ("glb", "/x.glb", "_a/b.png", ".a..b", ""):
        with pytest.raises(ValueError):
            writer.clean_suffix(bad)


# -- output location checks before compute -----------------------------------------------------------


def test_location_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="is a file, not a folder.*-o/--output"):
        check_output_location(tmp_path / "file" / "sub", "r", (".glb",), what="-o/--output")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        reserve_stem(tmp_path / "file", "r", (".glb",))


def test_location_not_writable_fake_and_real(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, flags, *a):
        if ".synchuman-probe-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a)

    with monkeypatch.context() as m:
        m.setattr(os, "open", denied)
        with pytest.raises(OutputError, match="permission denied.*filename_prefix"):
            check_output_location(tmp_path, "r", (".glb",), what="filename_prefix")
    if os.geteuid() != 0:  # root writes anywhere; the fake above covers it
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable|permission denied"):
                check_output_location(ro, "r", (".glb",))
        finally:
            ro.chmod(0o700)


def test_location_free_space(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000_000))
    check_output_location(tmp_path, "r", (".glb",), estimate_bytes=9_000_000)
    with pytest.raises(OutputError, match=r"not enough free space.*about 50 MB needed, 10 MB free"):
        check_output_location(tmp_path, "r", (".glb",), estimate_bytes=50_000_000)


def test_location_path_too_long(tmp_path):
    deep = tmp_path
    for _ in range(40):
        deep = deep / ("d" * 100)
    with pytest.raises(OutputError, match="too long"):
        check_output_location(deep, "r", (".glb",))
    assert not (tmp_path / ("d" * 100)).exists()  # the check creates nothing


# -- concurrency -------------------------------------------------------------------------------------


def _writer_process(folder: str, tag: str, n: int) -> None:
    for i in range(n):
        with reserve_stem(folder, "result", (".glb", "_gaussians.ply")) as out:
            out.write_bytes(".glb", f"{tag}-{i}".encode() * 100)
            out.write_bytes("_gaussians.ply", f"{tag}-{i}".encode() * 50)


def test_two_processes_into_one_folder_never_share_a_stem(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer_process, args=(str(tmp_path), tag, 12)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    glbs = sorted(tmp_path.glob("*.glb"))
    assert len(glbs) == 24
    runs = set()
    for g in glbs:  # each result's companion holds the same run's bytes: never mixed
        ply = g.with_name(g.stem + "_gaussians.ply").read_bytes()
        assert len(ply) * 2 == len(g.read_bytes()) and ply == g.read_bytes()[: len(ply)], g.name
        runs.add(ply[: ply.index(b"-") + 3])
    assert len(runs) >= 2
    assert_nothing_partial(tmp_path)


def _replace_process(path: str, byte: int) -> None:
    for _ in range(30):
        replace_atomically(path, lambda p: Path(p).write_bytes(bytes([byte]) * 200_000))


def test_cache_replacement_is_atomic_under_two_processes(tmp_path):
    target = tmp_path / "cache.safetensors"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_replace_process, args=(str(target), b)) for b in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = target.read_bytes()
    assert len(data) == 200_000 and len(set(data)) == 1  # one writer's complete file, never a mix
    assert_nothing_partial(tmp_path)


# -- property: nothing existing ever changes ---------------------------------------------------------

_NAMES = st.one_of(
    st.text(min_size=0, max_size=80),
    st.text(alphabet=st.sampled_from(list("/\\.:*?\"<>| \n\t\x00_-aA\u00e9\u4eba\U0001f600")), max_size=40),
    st.sampled_from(["CON", "nul.glb", "com1", "LPT9.txt", "..", ".", "a/../b", "\u00e9" * 200, "x" * 300]),
)
_SUFFIX_SETS = st.sampled_from([(".glb",), (".glb", "_gaussians.ply"), OBJ, (".ply", "_color_front.png", ".json")])
_EXISTING = st.lists(
    st.tuples(st.sampled_from(["result", "person", "_CON", "mesh", "output", "x" * 120, "\u00e9" * 60]),
              st.sampled_from(["", "_00001", "_00002"]),
              st.sampled_from([".glb", ".png", ".mtl", "_gaussians.ply", ".ply", ".json", ".obj"]),
              st.binary(min_size=0, max_size=16)),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_NAMES, min_size=1, max_size=4), sufs=_SUFFIX_SETS, existing=_EXISTING)
def test_property_random_names_never_change_existing_files(tmp_path_factory, names, sufs, existing):
    folder = tmp_path_factory.mktemp("prop")
    for stem, counter, suffix, data in existing:
        (folder / f"{stem}{counter}{suffix}").write_bytes(data)
    before = snapshot(folder)
    written: list[Path] = []
    for name in names:
        with reserve_stem(folder, name, sufs) as out:
            for s in sufs:
                out.write_bytes(s, f"{name!r}{s}".encode("utf-8", "backslashreplace"))
        stems = {p.name[: -len(s)] for p, s in zip(out.paths, sufs)}
        assert stems == {out.stem}, "companions share one stem"
        assert all(p.parent == folder for p in out.paths), "never outside the folder"
        assert all(len(p.name.encode()) <= 255 for p in out.paths)
        written += out.paths
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before, "an existing file changed"
    assert len(after) == len(before) + len(written), "a new file replaced another new file"
    assert_nothing_partial(folder)
    assert sanitize_name(sanitize_name(names[0])) == sanitize_name(names[0])


_SIGINT_WRITER = """
import sys, time
from synchuman_core.export.writer import reserve_stem
with reserve_stem(sys.argv[1], "r", (".glb", "_gaussians.ply")) as out:
    out.write_bytes(".glb", b"complete mesh")
    with out.open("_gaussians.ply") as fh:
        fh.write(b"half of the gaussians")
        print("READY", flush=True)
        time.sleep(60)  # Ctrl+C arrives while this file is half written
"""


def test_sigint_while_writing_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "r.glb").write_bytes(b"older")
    # a test runner started in the background (`cmd &` in a non-interactive shell) ignores SIGINT and its
    # children inherit that: give the child Ctrl+C back, as an interactive terminal would
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r_00001.glb.part", ".r_00001_gaussians.ply.part",
                                                          "r.glb"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.glb"] and (tmp_path / "r.glb").read_bytes() == b"older"


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 256 KiB file system (tmpfs), where the machine allows mounting one (root, CAP_SYS_ADMIN)."""
    import shutil as sh
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if sh.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (the fake-writer tests cover disk full)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_glb_and_ply(small_filesystem):
    import torch

    from synchuman_core.export import write_glb, write_ply
    from synchuman_core.geometry import TexturedMesh
    from synchuman_core.geometry.synthetic import synthetic_body

    v, f = synthetic_body(40)
    mesh = TexturedMesh(v.float(), f.long(), vertex_colors=torch.rand(v.shape[0], 3))
    (small_filesystem / "keep.txt").write_bytes(b"keep")
    for write, name in ((write_glb, "m.glb"), (write_ply, "m.ply")):
        with pytest.raises(OutputError, match="disk is full") as e:
            write(mesh, small_filesystem / name)
        assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(small_filesystem)) == ["keep.txt"]
