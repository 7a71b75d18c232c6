"""The results.json contract of ``infworld bench`` (schema id "infworld-bench/1") and its validator.

:data:`RESULTS_SCHEMA` is a JSON-Schema (draft 2020-12) document that other tools can use as is.
:func:`validate_results` checks an object against it with a small validator of the keywords the
schema uses (type, const, enum, required, properties, additionalProperties, propertyNames, pattern,
items, minimum, format date-time), then the cross-field rules JSON-Schema cannot say (equal list
lengths, ratings that name known variants). Errors are DataError naming the JSON path, e.g.
``variants.kv.replay.psnr[3]: expected a finite number or null, got 'abc' (str)``.

Every measurement may be null ("not measured"); numbers must be finite (NaN is written as null).
Any protocol may be absent from a variant (not run). Unknown extra keys are allowed and ignored.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from infworld.errors import DataError

SCHEMA_ID = "infworld-bench/1"
PROTOCOLS = ("replay", "revisit", "action", "distribution", "speed")
TRAJECTORY_KINDS = ("replay", "out_and_back", "loop", "turn", "long_out_and_back", "long_loop", "look_back",
                    "data")  # trajectories.KINDS and "data" (a user's dataset)
CRITERIA = ("memory", "fidelity", "action")

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_NUMS = {"type": "array", "items": _NUM}
_INTS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_AXES = {"type": ["object", "null"], "required": ["move", "view"], "properties": {"move": _NUM, "view": _NUM}}
_CI = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props) if required is None else required,
            "properties": props, **extra}


_REPLAY = _obj({"horizon": _INTS, "psnr": _NUMS, "ssim": _NUMS, "psnr_mean": _NUM, "ssim_mean": _NUM})
_COUNT = {"type": "integer", "minimum": 0}
_REVISIT = _obj({
    "events": _COUNT,
    "psnr_gt": _NUM, "ssim_gt": _NUM, "psnr_self": _NUM, "ssim_self": _NUM,
    "per_trajectory": {"type": "object", "additionalProperties": _obj(
        {"psnr_gt": _NUM, "psnr_self": _NUM, "events": _COUNT})},
    # suites with gap buckets only (buckets.py): "16-64" -> that bucket's events and means
    "per_bucket": {"type": "object", "propertyNames": {"pattern": "^[0-9]+-[0-9]+$"},
                   "additionalProperties": _obj({"events": _COUNT, "psnr_gt": _NUM, "ssim_gt": _NUM,
                                                 "psnr_self": _NUM, "ssim_self": _NUM},
                                                required=["events", "psnr_gt"])},
}, required=["events", "psnr_gt", "ssim_gt", "psnr_self", "ssim_self", "per_trajectory"])
_ACTION = _obj({"idm_accuracy": _AXES, "idm_accuracy_real": _AXES, "psnr_true_actions": _NUM,
                "psnr_random_actions": _NUM, "psnr_gap": _NUM})
_DISTRIBUTION = _obj({
    "horizons": _INTS, "fd_ours": _NUMS, "kid_ours": _NUMS,
    "fid_inception": {"type": ["array", "null"], "items": _NUM},
    "dynamic_degree_proxy": _NUM, "motion_smoothness_proxy": _NUM,
})
_SPEED = _obj({
    "fps": _NUM, "latency_ms_p50": _NUM, "latency_ms_p95": _NUM, "peak_rss_mb": _NUM,
    "state_bytes": {"type": "object", "propertyNames": {"pattern": "^[0-9]+$"}, "additionalProperties": _INT},
})
_VARIANT = _obj({
    "memory": _obj({"name": _STR, "settings": {"type": "object"}}),
    "replay": _REPLAY, "revisit": _REVISIT, "action": _ACTION, "distribution": _DISTRIBUTION, "speed": _SPEED,
}, required=["memory"])
_RATING = _obj({"elo": {"type": "number"}, "elo_ci": _CI, "bt": {"type": "number"}, "bt_ci": _CI})
_CRITERION = _obj({"games": {"type": "integer", "minimum": 0}, "metric": _STR,
                   "ratings": {"type": "object", "additionalProperties": _RATING}},
                  required=["games", "ratings"])

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "infworld bench results",
    **_obj({
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string", "format": "date-time"},
        "suite": _obj({"name": _STR, "version": {"type": "integer"}, "trajectories": {
            "type": "array", "items": _obj({"name": _STR, "kind": {"enum": list(TRAJECTORY_KINDS)},
                                            "frames": {"type": "integer", "minimum": 0},
                                            "seed": {"type": "integer"}})}}),
        "model": _obj({"name": _STR, "path": _STR, "params": _INT}),
        "machine": _obj({"platform": _STR, "processor": _STR, "cores": _INT, "python": _STR, "torch": _STR,
                         "infworld": _STR}),
        "settings": _obj({"sampler": _STR, "steps": _INT, "chunk": _INT, "context": _INT, "seed": _INT}),
        "variants": {"type": "object", "additionalProperties": _VARIANT},
        "elo": _obj({"judge": _STR, "criteria": {"type": "object", "additionalProperties": _CRITERION}}),
    }, required=["schema", "created", "suite", "model", "machine", "settings", "variants"]),
}


def _type_ok(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":  # bool is an int in Python, not a number in JSON; NaN/inf are not JSON
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list | tuple)
    if t == "object":
        return isinstance(value, dict)
    raise ValueError(f"schema uses unknown type {t!r}")


def _describe(types: list[str]) -> str:
    names = {"number": "a finite number", "integer": "an integer", "string": "a string", "array": "a list",
             "object": "an object", "null": "null", "boolean": "true/false"}
    return " or ".join(names[t] for t in types)


def _fail(path: str, msg: str, source: str | None) -> None:
    raise DataError(msg, path=source, field=path or "<root>")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: Any, schema: dict[str, Any], path: str, source: str | None) -> None:
    """Validate ``value`` against one (sub)schema; the first error raises."""
    if "const" in schema and value != schema["const"]:
        _fail(path, f"expected {schema['const']!r}, got {value!r}", source)
    if "enum" in schema and value not in schema["enum"]:
        _fail(path, f"expected one of {schema['enum']}, got {value!r}", source)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            _fail(path, f"expected {_describe(types)}, got {value!r} ({type(value).__name__})", source)
    if value is None:
        return
    if "minimum" in schema and value < schema["minimum"]:
        _fail(path, f"expected a value >= {schema['minimum']}, got {value!r}", source)
    if schema.get("format") == "date-time":
        try:
            # Python < 3.11 does not read a trailing "Z"
            datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            _fail(path, f"expected an ISO-8601 date-time, got {value!r}", source)
    if "pattern" in schema and not re.search(schema["pattern"], value):
        _fail(path, f"expected text matching {schema['pattern']}, got {value!r}", source)
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                _fail(_join(path, key), "missing (required)", source)
        props = schema.get("properties", {})
        for key, sub in value.items():
            if not isinstance(key, str):
                _fail(path, f"expected string keys, got {key!r}", source)
            if "propertyNames" in schema:
                _check(key, schema["propertyNames"], _join(path, key), source)
            if key in props:
                _check(sub, props[key], _join(path, key), source)
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(sub, schema["additionalProperties"], _join(path, key), source)
    if isinstance(value, list | tuple):
        n = len(value)
        if n < schema.get("minItems", 0) or n > schema.get("maxItems", n):
            _fail(path, f"expected between {schema.get('minItems', 0)} and {schema.get('maxItems', 'any')} "
                        f"items, got {n}", source)
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", source)


def _same_length(block: dict[str, Any], base: str, others: tuple[str, ...], path: str,
                 source: str | None) -> None:
    n = len(block[base])
    for key in others:
        if block.get(key) is not None and len(block[key]) != n:
            _fail(f"{path}.{key}", f"expected {n} values (one per entry of {base}), got {len(block[key])}",
                  source)


def validate_results(obj: Any, source: str | None = None) -> None:
    """Raise DataError (field = the JSON path) unless ``obj`` follows :data:`RESULTS_SCHEMA`.

    ``source`` (e.g. the results.json path) is named in the error when given.
    """
    _check(obj, RESULTS_SCHEMA, "", source)
    for name, variant in obj["variants"].items():
        if "replay" in variant:
            _same_length(variant["replay"], "horizon", ("psnr", "ssim"), f"variants.{name}.replay", source)
        if "distribution" in variant:
            _same_length(variant["distribution"], "horizons", ("fd_ours", "kid_ours", "fid_inception"),
                         f"variants.{name}.distribution", source)
    for crit, entry in (obj.get("elo") or {}).get("criteria", {}).items():
        for v, rating in entry["ratings"].items():
            where = f"elo.criteria.{crit}.ratings.{v}"
            if v not in obj["variants"]:
                _fail(where, f"rates an unknown variant (known: {sorted(obj['variants'])})", source)
            for key in ("elo", "bt"):
                lo, hi = rating[f"{key}_ci"]
                if lo > hi:
                    _fail(f"{where}.{key}_ci", f"expected [low, high] with low <= high, got {[lo, hi]}",
                          source)
