/**
 * JSON Schema -> GBNF, for constrained decoding (`generate(p, { jsonSchema })`, the server's
 * `response_format`). The output is compact JSON (no whitespace between tokens), properties in the
 * schema's order: every string the grammar accepts validates against the schema for the keywords
 * listed in {@link SUPPORTED_KEYWORDS}; any other validation keyword is refused with ERR_GRAMMAR
 * naming where it is, rather than silently producing output that might not validate.
 *
 * Supported: type (or a list of types), properties + required (optional ones may be left out),
 * additionalProperties (false, or a schema for objects without properties), items, minItems,
 * maxItems, enum, const, anyOf, oneOf (as anyOf: give disjoint branches), string minLength /
 * maxLength / format (date, date-time, time, uuid), $ref to "#", "#/$defs/..." or
 * "#/definitions/..." (recursion allowed).
 */
import { LlmserveError } from "../errors.js";

/** The keywords the compiler understands (the rest are annotations or refused). */
export const SUPPORTED_KEYWORDS = [
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "minLength",
  "maxLength",
  "format",
  "$ref",
  "$defs",
  "definitions",
] as const;

/** Keywords that do not constrain the value. */
const ANNOTATIONS = new Set([
  "$schema",
  "$id",
  "$comment",
  "$anchor",
  "title",
  "description",
  "default",
  "examples",
  "deprecated",
  "readOnly",
  "writeOnly",
]);

/** Largest minLength / maxLength / minItems / maxItems the grammar expands (GBNF repetition limit). */
export const MAX_SCHEMA_COUNT = 1000;

const PRIMITIVES: Record<string, string> = {
  ws: '" "?',
  // JSON string characters: anything but " \ and control characters, or an escape.
  char: '[^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
  string: '"\\"" char* "\\""',
  // Bounded digit counts keep numbers finite even under a model that never stops on its own.
  integer: '"-"? ("0" | [1-9] [0-9]{0,15})',
  number: 'integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
  boolean: '"true" | "false"',
  null: '"null"',
  value: "object | array | string | number | boolean | null",
  object: '"{" ( string ":" value ("," string ":" value)* )? "}"',
  array: '"[" ( value ("," value)* )? "]"',
  // Days valid for their month (February: 28, so any year is right; Feb 29 is never produced).
  date: '[0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" day31 | ( "0" [469] | "11" ) "-" day30 | "02-" day28 )',
  day28: '"0" [1-9] | "1" [0-9] | "2" [0-8]',
  day30: 'day28 | "29" | "30"',
  day31: 'day30 | "31"',
  time: '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
  "date-time": 'date "T" time',
  uuid: '[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
};
/** Which primitives each one uses (emitted transitively). */
const PRIMITIVE_DEPS: Record<string, string[]> = {
  string: ["char"],
  number: ["integer"],
  value: ["object", "array", "string", "number", "boolean", "null"],
  object: ["string", "value"],
  array: ["value"],
  "date-time": ["date", "time"],
  date: ["day31", "day30", "day28"],
  day31: ["day30"],
  day30: ["day28"],
};
const FORMATS = new Set(["date", "date-time", "time", "uuid"]);

/** A GBNF literal for `s` (UTF-8 text; quotes, backslashes and control characters escaped). */
export function gbnfLiteral(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (c < 0x20) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

type Schema = Record<string, unknown> | boolean;

class Compiler {
  private rules = new Map<string, string>();
  private used = new Set<string>();
  private refs = new Map<string, string>(); // "#/$defs/X" -> rule name
  private problems: string[] = [];
  private n = 0;
  constructor(
    private root: Schema,
    /** The start rule's name; the schema's own rules are named after it (primitives are shared). */
    private start = "root",
  ) {}

  compile(): string {
    const body = this.visit(this.root, "#");
    if (this.problems.length > 0) {
      throw new LlmserveError(
        "ERR_GRAMMAR",
        `JSON schema not supported: ${this.problems.slice(0, 10).join("; ")}${this.problems.length > 10 ? "; ..." : ""}. ` +
          `Supported keywords: ${SUPPORTED_KEYWORDS.join(", ")}.`,
      );
    }
    const lines = [`${this.start} ::= ${body}`];
    for (const [name, rule] of this.rules) lines.push(`${name} ::= ${rule}`);
    const emitted = new Set<string>();
    const emit = (p: string) => {
      if (emitted.has(p)) return;
      emitted.add(p);
      lines.push(`${p} ::= ${PRIMITIVES[p]}`);
      for (const d of PRIMITIVE_DEPS[p] ?? []) emit(d);
    };
    for (const p of this.used) emit(p);
    return `${lines.join("\n")}\n`;
  }

  private ruleName(): string {
    return this.start === "root" ? `r${++this.n}` : `${this.start}r${++this.n}`;
  }
  private prim(name: string): string {
    this.used.add(name);
    return name;
  }
  private rule(body: string): string {
    const name = this.ruleName();
    this.rules.set(name, body);
    return name;
  }
  private count(s: Record<string, unknown>, key: string, at: string): number | undefined {
    const v = s[key];
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > MAX_SCHEMA_COUNT) {
      this.problems.push(`${at}/${key} must be an integer in [0, ${MAX_SCHEMA_COUNT}]`);
      return undefined;
    }
    return v as number;
  }

  /** A GBNF expression matching exactly the JSON values `s` accepts (at JSON pointer `at`). */
  private visit(s: Schema, at: string): string {
    if (s === true) return this.prim("value");
    if (s === false || typeof s !== "object" || s === null || Array.isArray(s)) {
      this.problems.push(`${at} must be a schema object${s === false ? " (false accepts nothing)" : ""}`);
      return '""';
    }
    for (const k of Object.keys(s)) {
      if (!(SUPPORTED_KEYWORDS as readonly string[]).includes(k) && !ANNOTATIONS.has(k))
        this.problems.push(`${at}/${k} (keyword "${k}")`);
    }
    if (s.$ref !== undefined) return this.ref(s.$ref, at);
    if (s.const !== undefined) return gbnfLiteral(JSON.stringify(s.const));
    if (s.enum !== undefined) {
      if (!Array.isArray(s.enum) || s.enum.length === 0) {
        this.problems.push(`${at}/enum must be a non-empty array`);
        return '""';
      }
      return `( ${s.enum.map((v) => gbnfLiteral(JSON.stringify(v))).join(" | ")} )`;
    }
    const alts = (s.anyOf ?? s.oneOf) as unknown;
    if (alts !== undefined) {
      const key = s.anyOf !== undefined ? "anyOf" : "oneOf";
      if (!Array.isArray(alts) || alts.length === 0) {
        this.problems.push(`${at}/${key} must be a non-empty array`);
        return '""';
      }
      return `( ${alts.map((a, i) => this.visit(a as Schema, `${at}/${key}/${i}`)).join(" | ")} )`;
    }
    let types = s.type as unknown;
    if (types === undefined) {
      if (s.properties !== undefined || s.additionalProperties !== undefined) types = "object";
      else if (s.items !== undefined) types = "array";
      else return this.prim("value");
    }
    const list = Array.isArray(types) ? types : [types];
    if (list.length === 0) this.problems.push(`${at}/type must not be empty`);
    const parts = list.map((t) => this.typed(s, String(t), at));
    return parts.length === 1 ? parts[0] : `( ${parts.join(" | ")} )`;
  }

  private typed(s: Record<string, unknown>, t: string, at: string): string {
    switch (t) {
      case "string":
        return this.string(s, at);
      case "integer":
      case "number":
      case "boolean":
      case "null":
        return this.prim(t);
      case "array":
        return this.array(s, at);
      case "object":
        return this.object(s, at);
      default:
        this.problems.push(`${at}/type "${t}" is not a JSON Schema type`);
        return '""';
    }
  }

  private string(s: Record<string, unknown>, at: string): string {
    if (s.format !== undefined) {
      if (typeof s.format !== "string" || !FORMATS.has(s.format)) {
        this.problems.push(`${at}/format "${String(s.format)}" (supported: ${[...FORMATS].join(", ")})`);
        return '""';
      }
      return `"\\"" ${this.prim(s.format)} "\\""`;
    }
    const min = this.count(s, "minLength", at) ?? 0;
    const max = this.count(s, "maxLength", at);
    if (min === 0 && max === undefined) return this.prim("string");
    if (max !== undefined && max < min) {
      this.problems.push(`${at}/maxLength is below minLength`);
      return '""';
    }
    this.prim("char");
    return `"\\"" char{${min},${max ?? ""}} "\\""`;
  }

  private array(s: Record<string, unknown>, at: string): string {
    const item = s.items === undefined ? this.prim("value") : this.visit(s.items as Schema, `${at}/items`);
    const min = this.count(s, "minItems", at) ?? 0;
    const max = this.count(s, "maxItems", at);
    if (max !== undefined && max < min) {
      this.problems.push(`${at}/maxItems is below minItems`);
      return '""';
    }
    if (max === 0) return '"[]"';
    const it = this.rule(item);
    const rest = `( "," ${it} ){${Math.max(min - 1, 0)},${max === undefined ? "" : max - 1}}`;
    return min === 0 ? `"[" ( ${it} ${rest} )? "]"` : `"[" ${it} ${rest} "]"`;
  }

  private object(s: Record<string, unknown>, at: string): string {
    const props = s.properties as Record<string, Schema> | undefined;
    const addl = s.additionalProperties as Schema | undefined;
    if (props !== undefined && (typeof props !== "object" || props === null || Array.isArray(props))) {
      this.problems.push(`${at}/properties must be an object`);
      return '""';
    }
    const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
    const names = Object.keys(props ?? {});
    for (const r of required) {
      if (!names.includes(r)) this.problems.push(`${at}/required names "${r}", which is not in properties`);
    }
    if (names.length === 0) {
      if (addl === false) return '"{}"';
      if (addl === undefined || addl === true) return this.prim("object");
      const v = this.visit(addl, `${at}/additionalProperties`);
      const kv = this.rule(`${this.prim("string")} ":" ${v}`);
      return `"{" ( ${kv} ( "," ${kv} )* )? "}"`;
    }
    // Properties in order; optional ones may be skipped. Two rules per position: `first` (nothing
    // written yet: no comma before the next one) and `more` (something written: a comma first).
    // Additional properties are never generated: leaving them out is always valid.
    const kvs = names.map(
      (k) => `${gbnfLiteral(JSON.stringify(k))} ":" ${this.visit(props![k], `${at}/properties/${k}`)}`,
    );
    let first = '""';
    let more = '""';
    for (let i = names.length - 1; i >= 0; i--) {
      const kv = this.rule(kvs[i]);
      const m = required.has(names[i]) ? `"," ${kv} ${more}` : `"," ${kv} ${more} | ${more}`;
      const f = required.has(names[i]) ? `${kv} ${more}` : `${kv} ${more} | ${first}`;
      more = this.rule(m);
      first = this.rule(f);
    }
    return `"{" ${first} "}"`;
  }

  private ref(r: unknown, at: string): string {
    if (typeof r !== "string" || !(r === "#" || r.startsWith("#/$defs/") || r.startsWith("#/definitions/"))) {
      this.problems.push(`${at}/$ref "${String(r)}" (only local refs: "#", "#/$defs/Name", "#/definitions/Name")`);
      return '""';
    }
    const known = this.refs.get(r);
    if (known) return known;
    let target: unknown = this.root;
    if (r !== "#") {
      const [, group, ...rest] = r.split("/");
      const name = rest.join("/").replace(/~1/g, "/").replace(/~0/g, "~");
      const defs = (this.root as Record<string, unknown>)[group] as Record<string, unknown> | undefined;
      target = defs !== undefined && Object.hasOwn(defs, name) ? defs[name] : undefined;
    }
    if (target === undefined) {
      this.problems.push(`${at}/$ref "${r}" points to nothing`);
      return '""';
    }
    const name = this.ruleName();
    this.refs.set(r, name); // before visiting: a recursive schema refers to its own rule
    this.rules.set(name, '""');
    this.rules.set(name, this.visit(target as Schema, r));
    return name;
  }
}

/**
 * Compiles a JSON schema into GBNF (see the module comment for what is supported). Throws
 * ERR_GRAMMAR listing every unsupported keyword and where it is.
 * @example jsonSchemaToGbnf({ type: "object", properties: { n: { type: "integer" } }, required: ["n"] })
 */
export function jsonSchemaToGbnf(schema: unknown): string {
  if (typeof schema !== "boolean" && (typeof schema !== "object" || schema === null || Array.isArray(schema)))
    throw new LlmserveError("ERR_GRAMMAR", "Expected a JSON schema (an object) for jsonSchema");
  return new Compiler(schema as Schema).compile();
}

/**
 * The GBNF rules of a JSON schema with start rule `start` (letters and digits) instead of `root`,
 * its own rules named after it, so several schemas combine into one grammar (tool calls: one
 * argument schema per tool); primitive rules (string, number, ...) keep their shared names.
 */
export function jsonSchemaRules(schema: unknown, start: string): string {
  if (!/^[a-zA-Z][a-zA-Z0-9]*$/.test(start))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected letters and digits for a rule name but received ${start}`,
    );
  if (typeof schema !== "boolean" && (typeof schema !== "object" || schema === null || Array.isArray(schema)))
    throw new LlmserveError("ERR_GRAMMAR", "Expected a JSON schema (an object)");
  return new Compiler(schema as Schema, start).compile();
}

/** GBNF for any JSON object (OpenAI's `response_format: { type: "json_object" }`). */
export function jsonObjectGbnf(): string {
  return new Compiler({ type: "object" }).compile();
}
