"""CompiledModel.run: inputs copied into preallocated tensors, outputs returned without a copy -- and still
never changed by a later run, also when the model returns a view of its input."""
import numpy as np

import patvm
from patvm.onnx_format import GraphWriter


def test_outputs_survive_later_runs_even_when_they_view_the_input():
    g = GraphWriter("views")
    x = g.input("x", [2, 3])
    g.output(g.node("Reshape", [x, g.constant(np.array([3, 2], np.int64), "shape")], "reshape"), [3, 2])
    g.output(g.relu(x), [2, 3], name="relu")
    compiled = patvm.compile(g.model(), target="host")
    first = compiled.run(np.arange(6, dtype=np.float32).reshape(2, 3) - 2)
    second = compiled.run(np.full((2, 3), 7, np.float32))
    np.testing.assert_array_equal(first[0].ravel(), np.arange(6) - 2)
    np.testing.assert_array_equal(first[1].ravel(), np.maximum(np.arange(6) - 2, 0))
    assert np.all(second[0] == 7) and np.all(second[1] == 7)
