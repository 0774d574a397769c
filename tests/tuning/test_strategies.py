"""Measured strategy choice: every binary workload timed both ways, written to strategies.json, applied."""
import json

import numpy as np
from tuning_helpers import compiler_builders

import patvm
from patvm.compiler.pipeline import import_and_lower
from patvm.compiler.strategy import StrategyPolicy
from patvm.records import STRATEGY_FILE
from patvm.tuning.strategies import measure_strategies, stand_in_layer

binary_layer_model = compiler_builders().binary_layer_model
onnxruntime_run = compiler_builders().onnxruntime_run


def test_stand_in_layer_has_the_workload_of_the_original():
    model, _ = binary_layer_model(kind="conv", C=16, O=8, H=6, batch=1, stride=2)
    (report,) = import_and_lower(model, StrategyPolicy("bit-serial"))[1]
    layer, x = stand_in_layer(report.workload)
    (again,) = import_and_lower(layer, StrategyPolicy("bit-serial"))[1]
    assert again.workload == report.workload and x.shape == (1, 16, 6, 6)


def test_measured_choices_are_written_and_applied(tmp_path):
    model, x = binary_layer_model(kind="conv", C=16, O=8, H=6, batch=1)
    choices = measure_strategies(model, "host", tmp_path)
    (workload, choice), = choices.items()
    assert choice["strategy"] in ("bit-serial", "fp32") and "ms" in choice["note"]
    assert json.loads((tmp_path / STRATEGY_FILE).read_text()) == choices
    # force the opposite choice in the file: the compiler must follow the file, not its estimate
    flipped = "fp32" if choice["strategy"] == "bit-serial" else "bit-serial"
    (tmp_path / STRATEGY_FILE).write_text(json.dumps({workload: {"strategy": flipped, "note": "test"}}))
    compiled = patvm.compile(model, target="host", tuning_db=tmp_path)
    assert compiled.layers[0]["strategy"] == flipped and compiled.layers[0]["reason"].startswith("measured")
    np.testing.assert_array_equal(compiled.run(x)[0], onnxruntime_run(model, {"x": x})[0])
