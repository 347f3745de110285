import numpy as np
import pytest

import quanta
from quanta.__main__ import main
from quanta.datasets import read_vectors


def write_fvecs(path, x):
    d = x.shape[1]
    rows = np.empty((len(x), d + 1), np.int32)
    rows[:, 0] = d
    rows[:, 1:] = x.view(np.int32)
    rows.tofile(path)


def test_build_search_info(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    write_fvecs(tmp_path / "q.fvecs", x[:20])
    np.testing.assert_array_equal(read_vectors(tmp_path / "q.fvecs"), x[:20])
    out = tmp_path / "x.qnt"
    assert main(["build", str(tmp_path / "x.npy"), "-o", str(out), "--spec", "Flat(i8)",
                 "--metric", "l2", "--batch", "128", "--quiet"]) == 0
    index = quanta.load(out)
    assert (index.ntotal, index.storage, index.metric) == (500, "i8", "l2")
    gt = np.arange(20)[:, None]
    np.save(tmp_path / "gt.npy", gt)
    assert main(["search", str(out), str(tmp_path / "q.fvecs"), "-k", "1",
                 "--ground-truth", str(tmp_path / "gt.npy"), "-o", str(tmp_path / "r.npz")]) == 0
    res = np.load(tmp_path / "r.npz")
    assert (res["ids"][:, 0] == np.arange(20)).mean() >= 0.95
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recall@1" in text and "kind: FLAT" in text


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("x")
    assert main(["build", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "o.qnt")]) == 2
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    assert main(["build", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.qnt"),
                 "--spec", "HNSW32"]) == 2
    assert "unknown index spec" in capsys.readouterr().err
    with pytest.raises(ValueError):
        read_vectors(tmp_path / "bad.txt")
    for batch in ("0", "-5"):  # used to write an empty index and exit 0
        assert main(["build", str(tmp_path / "x.npy"), "-o", str(tmp_path / "b.qnt"),
                     "--batch", batch, "--quiet"]) == 2
        assert "--batch" in capsys.readouterr().err
    np.save(tmp_path / "c.npy", np.ones((4, 3), np.complex64))  # used to be cast silently
    assert main(["build", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.qnt")]) == 2
    assert "real numbers" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.qnt"), "--quiet"]) == 0
    np.save(tmp_path / "gt1.npy", np.arange(4))  # 1-D: used to raise IndexError
    assert main(["search", str(tmp_path / "o.qnt"), str(tmp_path / "x.npy"), "-k", "1",
                 "--ground-truth", str(tmp_path / "gt1.npy")]) == 2
    assert "--ground-truth" in capsys.readouterr().err


def test_demo_runs_every_index_kind(capsys):
    assert main(["demo", "--n", "2000", "--dim", "32", "--nq", "20"]) == 0
    out = capsys.readouterr().out
    assert "recall@10" in out
    for kind in ("Flat(f8e4m3)", "PQ4x8", "PQ8x4fs,Refine(f16)", "IVF44,PQ8x4fs,Refine(f16)",
                 "RBE32x2", "Graph32(f16)"):
        line = next(ln for ln in out.splitlines() if ln.startswith(kind + " "))
        assert float(line.split()[3]) > 0.1, line  # recall@10 column


def test_index_factory():
    assert quanta.index_factory(8, "Flat").storage == "f32"
    assert quanta.index_factory(8, "Flat(bf16)", metric="cosine").metric == "cosine"
    for bad in ("Flat(f4)", "HNSW32", "", "flat"):
        with pytest.raises(ValueError, match="spec"):
            quanta.index_factory(8, bad)
    with pytest.raises(TypeError):
        quanta.index_factory(8, None)


def test_version_is_the_package_metadata(capsys):
    from importlib.metadata import version
    assert quanta.__version__ == version("quanta")
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"quanta {quanta.__version__}"


def test_package_ships_license_and_typing_marker():
    import pathlib
    from importlib.metadata import distribution
    here = pathlib.Path(quanta.__file__).parent
    assert (here / "py.typed").exists()
    meta = distribution("quanta").metadata
    assert meta["License"] == "Apache-2.0" or "Apache" in (meta.get("License-Expression") or "")
    assert any("Typing :: Typed" == c for c in meta.get_all("Classifier"))
    root = pathlib.Path(__file__).parents[1]
    assert "Apache License" in (root / "LICENSE").read_text()


def test_cpu_features_lists_every_feature_a_kernel_checks():
    """build_info()["cpu_features"] names each CPU feature that a kernel tests (when this CPU
    has it), so a bug report shows which paths ran."""
    import pathlib
    import re
    root = pathlib.Path(__file__).parents[1] / "cpp" / "src"
    checked = set()
    for f in root.rglob("*.cpp"):
        checked |= set(re.findall(r'__builtin_cpu_supports\("([a-z0-9-]+)"\)', f.read_text()))
    try:
        flags = set(open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        pytest.skip("no /proc/cpuinfo flags here")
    have = {c for c in checked if c in flags or c.replace("avx512", "avx512_") in flags}
    assert have <= set(quanta.build_info()["cpu_features"])


@pytest.mark.parametrize("spec", ["PQ8x4fs,Refine(f16)", "OPQ8,IVF16,PQ8x8,Refine(f8e4m3)",
                                  "RBE64x2,Refine(f16)", "IVF16,RBE64x2,Refine(i8)"])
def test_repr_shows_the_re_ranking(spec):
    text = repr(quanta.index_factory(64, spec))
    storage = spec.split("Refine(")[1].rstrip(")")
    assert f"refine={storage!r}, refine_factor=4" in text


def test_search_settings_and_training_sample(tmp_path, capsys):
    x = quanta.datasets.clustered(3000, 32, nq=1, seed=2)[0]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", x[:30])
    for spec, setting in (("IVF32,PQ8x8", ["--nprobe", "32"]), ("Graph16(f16)", ["--width", "40"])):
        out = str(tmp_path / "i.qnt")
        assert main(["build", str(tmp_path / "x.npy"), "-o", out, "--spec", spec, "--quiet",
                     "--train-size", "2000", "--seed", "3"]) == 0
        assert main(["search", out, str(tmp_path / "q.npy"), "-k", "1", "-o",
                     str(tmp_path / "r.npz")] + setting) == 0
        assert (np.load(tmp_path / "r.npz")["ids"][:, 0] == np.arange(30)).mean() >= 0.9
    capsys.readouterr()
    # a setting the index does not have: a clear error, exit status 2
    assert main(["search", out, str(tmp_path / "q.npy"), "--nprobe", "4"]) == 2
    assert "has no nprobe setting" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "x.npy"), "-o", out, "--train-size", "0"]) == 2


def test_vector_file_formats_are_memory_mapped(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    ints = rng.integers(-1000, 1000, (40, 6)).astype(np.int32)
    u8 = rng.integers(0, 256, (40, 6)).astype(np.uint8)

    def vecs(path, a):
        with open(path, "wb") as f:
            for row in a:
                f.write(np.int32(a.shape[1]).tobytes() + row.tobytes())

    def binfile(path, a):
        with open(path, "wb") as f:
            f.write(np.array(a.shape, np.int32).tobytes() + a.tobytes())

    cases = [("a.fvecs", x, vecs), ("a.ivecs", ints, vecs), ("a.bvecs", u8, vecs),
             ("a.fbin", x, binfile), ("a.ibin", ints, binfile), ("a.u8bin", u8, binfile),
             ("a.i8bin", u8.view(np.int8), binfile)]
    for name, a, write in cases:
        write(tmp_path / name, a)
        got = read_vectors(tmp_path / name)
        assert isinstance(got, np.memmap) or isinstance(got.base, np.memmap), name
        np.testing.assert_array_equal(got, a, err_msg=name)
    # damaged files: clear errors
    (tmp_path / "short.fbin").write_bytes((tmp_path / "a.fbin").read_bytes()[:-4])
    with pytest.raises(ValueError, match="header says 40 x 6"):
        read_vectors(tmp_path / "short.fbin")
    raw = bytearray((tmp_path / "a.fvecs").read_bytes())
    raw[-(4 + 24):-24] = np.int32(5).tobytes()  # the last row claims another dimension
    (tmp_path / "mixed.fvecs").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="different dimensions"):
        read_vectors(tmp_path / "mixed.fvecs")
    with pytest.raises(ValueError, match="unsupported"):
        read_vectors(tmp_path / "a.txt")


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    import io
    from quanta._progress import Progress
    bar = Progress(10, "adding")
    bar.update(10)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    bar = Progress(10, "adding")
    bar.update(4)
    bar.update(6)
    assert "adding" in term.getvalue() and "10/10" in term.getvalue()
