#!/usr/bin/env python3
"""Checks text generated under a constraint against that constraint.

Each line of the JSON Lines file names the constraint, the generated text and why generation
stopped ("stop", "length", ...). Three modes and a self-test:

  validate_json.py FILE            lines {"schema": PATH, "text": ..., "finish": ...}: the text
                                   must parse as JSON and validate against the JSON Schema at
                                   PATH (draft 2020-12, formats checked where jsonschema can).
                                   A relative PATH is taken from the current directory, else
                                   from FILE's directory.
  validate_json.py --regex FILE    lines {"pattern": ..., "text": ...}: re.fullmatch(pattern, text).
  validate_json.py --choices FILE  lines {"choices": [...], "text": ...}: text is one of them.
  validate_json.py --self-test     checks a valid and an invalid example in each mode.

A line whose finish is "length" ran out of tokens: it is counted as incomplete, not checked,
and is allowed. Each failure prints one line (constraint, reason, text); the last line is
"N valid, M incomplete (length), K invalid". Exit status 1 if any line is invalid.

multipleOf is checked in decimal (jsonschema's own check uses binary floats). The formats are
checked by RFC 3339 rules, stricter than llguidance 1.9.1's grammar, which also lets through
February 29 of any year and second 60 of any minute: such outputs are reported invalid here.

Runs in the reference virtualenv (.venv-ref/bin/python), which has jsonschema.
"""

import decimal
import json
import pathlib
import re
import sys
import tempfile

import jsonschema


def multiple_of(validator, divisor, instance, schema):
    """multipleOf in decimal, as the number is written: with binary floats jsonschema finds
    77.63 not a multiple of 0.01."""
    if not validator.is_type(instance, "number"):
        return
    quotient = decimal.Decimal(repr(instance)) / decimal.Decimal(repr(divisor))
    if quotient != quotient.to_integral_value():
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"multipleOf": multiple_of})


class Checker:
    """Checks records of one mode; caches compiled schema validators by path."""

    def __init__(self, mode, base_dir="."):
        self.mode = mode
        self.base_dir = pathlib.Path(base_dir)
        self.validators = {}

    def validator(self, path):
        p = pathlib.Path(path)
        if not p.is_absolute() and not p.exists():
            p = self.base_dir / p
        if p not in self.validators:
            schema = json.loads(p.read_text())
            Validator.check_schema(schema)
            self.validators[p] = Validator(schema, format_checker=Validator.FORMAT_CHECKER)
        return self.validators[p]

    def check(self, rec):
        """Returns (name, reason): reason is None when the text satisfies the constraint."""
        text = rec["text"]
        if self.mode == "regex":
            ok = re.fullmatch(rec["pattern"], text) is not None
            return rec["pattern"], None if ok else "no full match"
        if self.mode == "choices":
            return "choices", None if text in rec["choices"] else "not one of the choices"
        name = pathlib.Path(rec["schema"]).name
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            return name, f"not JSON: {e}"
        error = jsonschema.exceptions.best_match(self.validator(rec["schema"]).iter_errors(value))
        if error is None:
            return name, None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return name, f"at {where}: {error.message}"


def run(checker, records, out=print):
    """Checks each record, prints the failures and the summary; returns the counts."""
    valid = incomplete = invalid = 0
    for rec in records:
        if rec.get("finish") == "length":
            incomplete += 1
            continue
        name, reason = checker.check(rec)
        if reason is None:
            valid += 1
        else:
            invalid += 1
            out(f"FAIL {name}: {reason}: {rec['text']!r}")
    out(f"{valid} valid, {incomplete} incomplete (length), {invalid} invalid")
    return valid, incomplete, invalid


def self_test():
    """One valid, one invalid and one incomplete line per mode, plus a format check."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 5},
            "day": {"type": "string", "format": "date"},
            "price": {"type": "number", "multipleOf": 0.01},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "person.json")
        path.write_text(json.dumps(schema))
        cases = {
            "schema": [
                ({"schema": str(path), "text": '{"name": "Ada", "day": "2024-02-29", "price": 77.63}'}, True),
                ({"schema": str(path), "text": '{"name": "Ada", "price": 77.635}'}, False),
                ({"schema": str(path), "text": '{"name": "Ada", "age": 3}'}, False),
                ({"schema": str(path), "text": '{"name": "Ada", "day": "2024-02-30"}'}, False),
                ({"schema": str(path), "text": '{"name": "Ad'}, False),
            ],
            "regex": [
                ({"pattern": r"[0-9]{3}-[A-Z]+", "text": "123-ABC"}, True),
                ({"pattern": r"[0-9]{3}-[A-Z]+", "text": "123-ABC!"}, False),
            ],
            "choices": [
                ({"choices": ["red", "green"], "text": "green"}, True),
                ({"choices": ["red", "green"], "text": "blue"}, False),
            ],
        }
        failed = 0
        for mode, recs in cases.items():
            checker = Checker(mode)
            for rec, want in recs:
                _, reason = checker.check(rec)
                if (reason is None) != want:
                    failed += 1
                    print(f"self-test {mode}: {rec['text']!r} should be {'valid' if want else 'invalid'} ({reason})")
            lines = []
            counts = run(checker, [r for r, _ in recs] + [dict(recs[1][0], finish="length")], lines.append)
            want_counts = (sum(w for _, w in recs), 1, sum(not w for _, w in recs))
            if counts != want_counts:
                failed += 1
                print(f"self-test {mode}: counts {counts}, expected {want_counts}")
    print("self-test passed" if not failed else f"self-test: {failed} failures")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    mode = "schema"
    if argv and argv[0] in ("--regex", "--choices"):
        mode = argv.pop(0)[2:]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = pathlib.Path(argv[0])
    with path.open() as f:
        records = [json.loads(line) for line in f if line.strip()]
    _, _, invalid = run(Checker(mode, path.parent), records)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
