"""Prints a fixture's reference prompt ids and greedy ids as two comma-separated words, the
arguments tests/c/test_model.c takes. Usage: ref_ids.py FIXTURE_DIR"""
import json
import sys

ref = json.load(open(f"{sys.argv[1]}/reference.json"))
src = ref["hf"] or ref["mlx_lm"]
print(",".join(map(str, ref["prompt_ids"])), ",".join(map(str, src["greedy_ids"])))
