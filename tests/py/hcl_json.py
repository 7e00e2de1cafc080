"""Prints the Terraform files of a folder as one JSON object, for the deployment test to check:
{"resource": {type: {name: body}}, "variable": {...}, "output": {...}, "locals": {...}}.
Blocks become objects (repeated blocks lists), quoted strings lose their quotes, and interpolations
stay as text ("${var.prefix}-x"). Parsing is python-hcl2, so a syntax error fails here even where
no terraform binary is installed.

usage: hcl_json.py DIR
"""
import json
import pathlib
import sys

import hcl2


def clean(v):
    if isinstance(v, dict):
        return {clean_key(k): clean(x) for k, x in v.items() if k != "__is_block__"}
    if isinstance(v, list):
        return [clean(x) for x in v]
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


def clean_key(k):
    return k[1:-1] if len(k) >= 2 and k[0] == '"' and k[-1] == '"' else k


out = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "terraform": [], "provider": []}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.tf")):
    with open(path) as f:
        doc = clean(hcl2.load(f))
    for kind in ("resource", "data"):
        for block in doc.get(kind, []):
            for rtype, named in block.items():
                for name, body in named.items():
                    assert name not in out[kind].setdefault(rtype, {}), f"{rtype}.{name} twice"
                    out[kind][rtype][name] = body | {"__file": path.name}
    for kind in ("variable", "output"):
        for block in doc.get(kind, []):
            out[kind].update(block)
    for block in doc.get("locals", []):
        out["locals"].update(block)
    out["terraform"] += doc.get("terraform", [])
    out["provider"] += doc.get("provider", [])
print(json.dumps(out))
