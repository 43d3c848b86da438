// The fraud plugin in JavaScript, built from wit/ with componentize-qjs: the same requests,
// outputs and errors as the Rust one in plugins/fraud for the same transactions, except that ids
// beyond 2^53 are refused (a JavaScript number cannot hold them).
//
// A transaction is a JSON object with an integer `id` and numbers `Time`, `V1` ... `V28`,
// `Amount`. The plugin declares those fields and the host reads them from each record
// (`record.fields`), so nothing here parses JSON. `prepare` asks for `fraud_probability` with
// one f32 [1, 30] `features` tensor and keeps the id as the call's state (8 bytes,
// little-endian), `complete` emits the verdict under the input key. Settings: `threshold`
// (default 0.5, in [0, 1]), `signature`.

const FEATURES = ["Time", ...Array.from({ length: 28 }, (_, i) => `V${i + 1}`), "Amount"];
const INPUT = "features";
const OUTPUT = "fraud_probability";

// UTF-8 by hand: QuickJS has no TextEncoder or TextDecoder.
function encode(text) {
  const bytes = [];
  for (const char of text) {
    const c = char.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
}

let config = null; // { threshold, signature } once configured

class Refusal extends Error {
  constructor(tag, message) {
    super(message);
    this.tag = tag;
  }
}

const invalid = (message) => new Refusal("invalid-record", message);
const describe = (value) => (value === null ? "null" : JSON.stringify(value));

const FIELDS = [{ name: "id", kind: "integer" }, ...FEATURES.map((name) => ({ name, kind: "number" }))];
const EXPECTED = { integer: "an integer", number: "a number" };

// The declared field `i`'s value; refused when it is missing or of another type.
function valueOf(fields, i) {
  const { name, kind } = FIELDS[i];
  const value = fields[i];
  if (value.tag === "absent") {
    throw invalid(`field \`${name}\` is missing`);
  }
  if (value.tag === "mismatch") {
    throw invalid(`field \`${name}\` is ${value.val}, expected ${EXPECTED[kind]}`);
  }
  return value.val;
}

function transactionId(fields) {
  const id = Number(valueOf(fields, 0));
  if (!Number.isSafeInteger(id)) {
    throw invalid(`field \`id\` must be an integer within 2^53, found ${valueOf(fields, 0)}`);
  }
  return id;
}

function feature(fields, i) {
  const value = valueOf(fields, i);
  const number = Math.fround(value);
  if (!Number.isFinite(number)) {
    throw invalid(`field \`${FIELDS[i].name}\` must be a number within f32 range, found ${value.toExponential().replace("e+", "e")}`);
  }
  return number;
}

function idBytes(id) {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, BigInt(id), true);
  return bytes;
}

function idOf(state) {
  return Number(new DataView(new Uint8Array(state).buffer).getBigInt64(0, true));
}

function prepareOne(record) {
  if (record.fields.tag === "err") {
    throw invalid(record.fields.val);
  }
  const fields = record.fields.val;
  const id = transactionId(fields);
  const features = FEATURES.map((_, i) => feature(fields, i + 1));
  const tensor = { name: INPUT, shape: [1, FEATURES.length], data: { tag: "f32", val: features } };
  const request = { inputs: [tensor], signature: config.signature, outputFilter: [OUTPUT] };
  return { tag: "infer", val: { request, state: idBytes(id) } };
}

function completeOne(completion) {
  const { origin, response } = completion;
  const id = idOf(completion.state);
  const found = response.outputs.find((tensor) => tensor.name === OUTPUT);
  if (!found) {
    const names = response.outputs.map((tensor) => tensor.name).join(", ");
    throw new Refusal("invalid-response", `model response has no output tensor \`${OUTPUT}\` (outputs: [${names}])`);
  }
  if (found.data.tag !== "f32") {
    throw new Refusal("invalid-response", `tensor \`${OUTPUT}\` holds ${found.data.tag} elements, expected f32`);
  }
  const values = Array.from(found.data.val);
  if (values.length !== 1 || !Number.isFinite(values[0])) {
    throw new Refusal("invalid-response", `output \`${OUTPUT}\` must hold one finite number, got ${describe(values)}`);
  }
  const probability = values[0];
  const verdict = {
    id,
    fraud_probability: probability,
    is_fraud: probability >= config.threshold,
    model_name: response.model.name,
    model_version: response.model.version ?? null,
  };
  const headers = [
    ["source-topic", origin.topic],
    ["source-partition", origin.partition],
    ["source-offset", origin.offset],
  ].map(([key, value]) => ({ key, value: encode(String(value)) }));
  return [{ key: origin.key ?? null, value: encode(JSON.stringify(verdict)), headers, topic: null }];
}

// One result per item: ok, or the plugin error the step threw.
function each(step, items) {
  return items.map((item) => {
    if (config === null) {
      return { tag: "err", val: { tag: "failed", val: "plugin not configured" } };
    }
    try {
      return { tag: "ok", val: step(item) };
    } catch (error) {
      if (error instanceof Refusal) {
        return { tag: "err", val: { tag: error.tag, val: error.message } };
      }
      return { tag: "err", val: { tag: "failed", val: String(error && error.message ? error.message : error) } };
    }
  });
}

export const handler = {
  configure(settings) {
    config = null;
    const given = new Map(settings); // the last value of a repeated key wins
    const raw = given.get("threshold");
    let threshold = 0.5;
    if (raw !== undefined) {
      const text = raw.trim();
      threshold = text === "" ? NaN : Number(text);
      if (Number.isNaN(threshold)) {
        throw `setting \`threshold\` = ${JSON.stringify(raw)} is not a valid f64: invalid float literal`;
      }
    }
    if (!(threshold >= 0 && threshold <= 1)) {
      throw `setting \`threshold\` = ${JSON.stringify(raw ?? "")} must be a number between 0 and 1`;
    }
    config = { threshold: Math.fround(threshold), signature: given.get("signature") || null };
  },

  requirements() {
    if (config === null) {
      return { inputs: [], outputs: [] };
    }
    return { inputs: [{ name: INPUT, dtype: "f32", shape: [-1, FEATURES.length] }], outputs: [OUTPUT] };
  },

  fields() {
    return config === null ? [] : FIELDS;
  },

  prepare(records) {
    return each(prepareOne, records);
  },

  complete(completions) {
    return each(completeOne, completions);
  },
};
