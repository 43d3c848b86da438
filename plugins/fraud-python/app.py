"""The fraud plugin in Python, built from wit/ with componentize-py: the same requests, outputs
and errors as the Rust one in plugins/fraud.

A transaction is a JSON object with an integer `id` and numbers `Time`, `V1` ... `V28`, `Amount`.
The plugin declares those fields and the host reads them from each record (`record.fields`), so
nothing here parses JSON. `prepare` asks for `fraud_probability` with one f32 [1, 30] `features`
tensor and keeps the id as the call's state (8 bytes, little-endian), `complete` emits the
verdict under the input key. Settings: `threshold` (default 0.5, in [0, 1]), `signature`.
"""

import json
import math
import re
import struct

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import types as t

FEATURES = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
FIELDS = [t.FieldSpec("id", t.FieldKind.INTEGER), *(t.FieldSpec(name, t.FieldKind.NUMBER) for name in FEATURES)]
INPUT, OUTPUT = "features", "fraud_probability"
FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", re.I | re.A)
F32 = struct.Struct("<f")
ID = struct.Struct("<q")  # the state a model call carries: the transaction's id
EXPECTED = {t.FieldKind.INTEGER: "an integer", t.FieldKind.NUMBER: "a number"}
config = None  # (threshold as f32, signature) once configured


def dumps(value):
    """Compact JSON, non-ASCII characters as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def f32(x):
    """`x` rounded to f32; OverflowError beyond its range (where Rust's `as f32` gives inf)."""
    return F32.unpack(F32.pack(x))[0]


def invalid(message):
    return Err(t.PluginError_InvalidRecord(message))


def value_of(fields, i):
    """The declared field `i`'s value; refused when it is missing or of another type."""
    spec, value = FIELDS[i], fields[i]
    if isinstance(value, t.FieldValue_Absent):
        raise invalid(f"field `{spec.name}` is missing")
    if isinstance(value, t.FieldValue_Mismatch):
        raise invalid(f"field `{spec.name}` is {value.value}, expected {EXPECTED[spec.kind]}")
    return value.value


def feature(fields, i):
    value = value_of(fields, i)
    try:
        number = f32(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise invalid(f"field `{FIELDS[i].name}` must be a number within f32 range, found {repr(float(value)).replace('e+', 'e')}")
    return number


def prepare(record):
    if isinstance(record.fields, Err):
        raise invalid(record.fields.value)
    fields = record.fields.value
    tx_id = value_of(fields, 0)
    features = [feature(fields, i) for i in range(1, len(FIELDS))]
    tensor = t.Tensor(INPUT, [1, len(FEATURES)], t.TensorData_F32(features))
    request = t.InferenceRequest([tensor], config[1], [OUTPUT])
    return t.Decision_Infer(t.ModelCall(request, ID.pack(tx_id)))


def complete(completion):
    origin, response = completion.origin, completion.response
    (tx_id,) = ID.unpack(completion.state)
    found = [tensor for tensor in response.outputs if tensor.name == OUTPUT]
    if not found:
        names = ", ".join(tensor.name for tensor in response.outputs)
        raise Err(t.PluginError_InvalidResponse(f"model response has no output tensor `{OUTPUT}` (outputs: [{names}])"))
    data = found[0].data
    if not isinstance(data, t.TensorData_F32):
        dtype = type(data).__name__.split("_", 1)[1].lower()
        raise Err(t.PluginError_InvalidResponse(f"tensor `{OUTPUT}` holds {dtype} elements, expected f32"))
    if len(data.value) != 1 or not math.isfinite(data.value[0]):
        raise Err(t.PluginError_InvalidResponse(f"output `{OUTPUT}` must hold one finite number, got {data.value}"))
    probability = data.value[0]  # an f32, compared at f32 precision
    verdict = {
        "id": tx_id,
        "fraud_probability": probability,
        "is_fraud": probability >= config[0],
        "model_name": response.model.name,
        "model_version": response.model.version,
    }
    headers = [("source-topic", origin.topic), ("source-partition", origin.partition), ("source-offset", origin.offset)]
    headers = [t.Header(key, str(value).encode()) for key, value in headers]
    return [t.OutputRecord(origin.key, dumps(verdict).encode(), headers, None)]


def each(step, items):
    """One result per item: Ok, or the plugin error `step` raised."""
    if config is None:
        return [Err(t.PluginError_Failed("plugin not configured")) for _ in items]
    results = []
    for item in items:
        try:
            results.append(Ok(step(item)))
        except Err as error:
            results.append(error)
    return results


class Handler(exports.Handler):
    def configure(self, settings):
        global config
        config, settings = None, dict(settings)  # the last value of a repeated key wins
        raw = settings.get("threshold")
        threshold = 0.5
        if raw is not None:
            if not FLOAT.fullmatch(raw.strip()):
                why = "cannot parse float from empty string" if not raw.strip() else "invalid float literal"
                raise Err(f"setting `threshold` = {dumps(raw)} is not a valid f64: {why}")
            threshold = float(raw.strip())
        if not 0.0 <= threshold <= 1.0:
            raise Err(f"setting `threshold` = {dumps(raw or '')} must be a number between 0 and 1")
        config = (f32(threshold), settings.get("signature") or None)

    def requirements(self):
        if config is None:
            return t.ModelRequirements([], [])
        return t.ModelRequirements([t.TensorSpec(INPUT, t.Dtype.F32, [-1, len(FEATURES)])], [OUTPUT])

    def fields(self):
        return FIELDS if config is not None else []

    def prepare(self, records):
        return each(prepare, records)

    def complete(self, completions):
        return each(complete, completions)
