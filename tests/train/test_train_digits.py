"""A real training run: scikit-learn's bundled digits, full precision, then PA fine-tuning (M=4, N=5).

Measured over seeds 0-4 (patvm.train.digits): full precision 0.987-0.996, PA 0.984-0.991, the largest
drop 0.0045; the floors below leave room for other machines' float differences.
"""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from patvm.train import PAConv2d, export_onnx
from patvm.train.digits import train_digits

FP_FLOOR = 0.95
PA_FLOOR = 0.93
MAX_DROP = 0.03


@pytest.fixture(scope="module")
def digits_run():
    return train_digits(M=4, N=5, seed=0)


def test_pa_fine_tuning_stays_close_to_full_precision(digits_run, capsys):
    fp, pa = digits_run["fp_acc"], digits_run["pa_acc"]
    with capsys.disabled():
        print(f"\ndigits (seed 0): full precision {fp:.4f}, PA M=4 N=5 {pa:.4f}, {digits_run['seconds']:.1f} s")
    binary = [m for m in digits_run["pa_model"].modules() if isinstance(m, PAConv2d)]
    assert len(binary) == 2 and type(digits_run["pa_model"][0]) is torch.nn.Conv2d
    assert fp >= FP_FLOOR
    assert pa >= PA_FLOOR and pa >= fp - MAX_DROP


def test_trained_pa_model_exports_and_runs_the_same_in_onnxruntime(digits_run, tmp_path):
    model, x = digits_run["pa_model"], digits_run["x_test"]
    exported = export_onnx(model, x[:1], tmp_path / "digits-pa.onnx")
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert float(np.mean(got.argmax(1) == digits_run["y_test"].numpy())) == pytest.approx(digits_run["pa_acc"])
