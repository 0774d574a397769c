"""Test machinery that ships with patvm: the differential fuzzer (random small PA-ONNX graphs compiled by
patvm and checked against onnxruntime; docs/reliability.md). Nothing in the compiler or the runtime
imports it.

    cases        the chooser protocol, a generated graph (FuzzCase), a graph's outcome (Outcome)
    graph_parts  building blocks of a graph: quantizer tables, weights, dyadic exactness bookkeeping
    generator    GraphGenerator and generate(seed, index): graph `index` of campaign `seed`
    oracle       onnxruntime's answer and the comparison (bit for bit, or the float tolerance); run_case
    flips        the flip classifier: a float difference that is one fp32-rounding threshold flip
    localize     the first node of a failing graph whose output differs
    campaign     many graphs, failures reported, saved, localized
    fuzz         the command line: python -m patvm.testing.fuzz --graphs 500 --seed 0
"""
from patvm.testing.campaign import campaign, save_case
from patvm.testing.cases import FuzzCase, Outcome
from patvm.testing.generator import generate, generate_with_hypothesis
from patvm.testing.oracle import compare, onnxruntime_outputs, run_case

__all__ = ["FuzzCase", "Outcome", "campaign", "compare", "generate", "generate_with_hypothesis",
           "onnxruntime_outputs", "run_case", "save_case"]
