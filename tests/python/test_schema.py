"""proto/examples.json against the JSON Schemas in proto/schema: the spec agrees with itself."""

import json
from pathlib import Path

from jsonschema import Draft202012Validator

PROTO = Path(__file__).resolve().parents[2] / "proto"


def load(name):
    return json.loads((PROTO / name).read_text())


def test_examples_match_the_schemas():
    client = Draft202012Validator(load("schema/client.schema.json"))
    server = Draft202012Validator(load("schema/server.schema.json"))
    examples = load("examples.json")["examples"]
    invalid_sent = 0
    for example in examples:
        # Examples that end in an error reply show invalid requests on purpose.
        expects_error = any(
            step.get("expect", {}).get("op") == "error" for step in example["steps"]
        )
        for step in example["steps"]:
            if "send" in step:
                errors = list(client.iter_errors(step["send"]))
                if expects_error:
                    invalid_sent += bool(errors)
                else:
                    assert not errors, (example["name"], [e.message for e in errors])
            for expected in ([step["expect"]] if "expect" in step else step.get("expect_any_order", [])):
                concrete = json.loads(json.dumps(expected).replace('"$any"', '"x"'))
                assert server.is_valid(concrete), (example["name"], expected)
    assert invalid_sent >= 4


def test_welcome_sample_matches():
    server = Draft202012Validator(load("schema/server.schema.json"))
    server.validate({"op": "welcome", "client": "n-1", "node": "n", "version": 1, "heartbeat": 25})
