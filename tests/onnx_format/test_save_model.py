"""`save_model` writes atomically: a temporary file beside the target, then a rename."""
import builtins
import errno
import os

import numpy as np
import onnx
import pytest

import patvm.files
from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter, save_model


def small_model(levels=(0.0, 1.0, 2.0)) -> onnx.ModelProto:
    g = GraphWriter("small")
    x = g.input("x", [1, 2])
    g.output(g.pa_quantize(x, Staircase(np.array([0.0, 1.0], np.float32), np.array(levels, np.float32))), [1, 2])
    return g.model()


class HalfWritingFile:
    """A file whose write stores half of the bytes and then fails as a full disk would."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def failing_open(path, mode="r", *args, **kwargs):
    f = builtins.open(path, mode, *args, **kwargs)
    return HalfWritingFile(f) if "w" in mode else f


def leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != "model.onnx")


def test_saved_model_loads_back_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    model = small_model()
    save_model(model, target)
    assert onnx.load(str(target)) == model
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_the_old_file_untouched_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    save_model(small_model(), target)
    before = target.read_bytes()
    monkeypatch.setattr(patvm.files, "open", failing_open, raising=False)
    with pytest.raises(OSError, match="No space left"):
        save_model(small_model(levels=(5.0, 6.0, 7.0)), target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_failed_first_write_creates_no_target(tmp_path, monkeypatch):
    monkeypatch.setattr(patvm.files, "open", failing_open, raising=False)
    with pytest.raises(OSError):
        save_model(small_model(), tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_write_goes_through_a_temporary_in_the_same_folder_then_rename(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((os.fspath(src), os.fspath(dst), os.path.getsize(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    model = small_model()
    target = tmp_path / "sub" / "model.onnx"
    save_model(model, target)
    assert len(renames) == 1
    src, dst, size = renames[0]
    assert os.path.dirname(src) == str(tmp_path / "sub") and src != dst and dst == str(target)
    assert size == len(model.SerializeToString())
    assert not os.path.exists(src)


def test_interrupted_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_model(small_model(), tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []
