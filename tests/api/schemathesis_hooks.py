"""schemathesis hooks for tests/api/openapi.rs (SCHEMATHESIS_HOOKS).

schemathesis sends JSON, forms and text of itself; `POST /v1/sources/{name}/import`
takes `application/x-ndjson`, one JSON value per line: a generated list is sent as its
items, one per line, a string as it is, any other value as one line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
