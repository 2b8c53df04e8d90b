/**
 * lib/grammar/jsonSchema.ts without the engine: the GBNF it writes for each construct, and the
 * typed error that lists every unsupported keyword with its JSON pointer. (What the grammars accept
 * is tested through the engine in test/native/grammar.test.ts.)
 */
import { describe, expect, it } from "vitest";
import { gbnfLiteral, jsonObjectGbnf, jsonSchemaToGbnf } from "../../../lib/grammar/jsonSchema.js";

describe("jsonSchemaToGbnf", () => {
  it("writes one rule per property position, bounded repetitions and literals for enum/const", () => {
    const g = jsonSchemaToGbnf({
      type: "object",
      properties: { a: { type: "string", maxLength: 3 }, b: { enum: ["x", 1] }, c: { const: null } },
      required: ["a"],
    });
    expect(g.startsWith("root ::= ")).toBe(true);
    expect(g).toContain("char{0,3}");
    expect(g).toContain('"\\"a\\"" ":"');
    expect(g).toContain('( "\\"x\\"" | "1" )');
    expect(g).toContain('"null"');
    expect(g).toMatch(/^char ::= /m);
  });

  it("arrays honor minItems/maxItems", () => {
    expect(jsonSchemaToGbnf({ type: "array", items: { type: "integer" }, minItems: 2, maxItems: 4 })).toMatch(
      /root ::= "\[" r1 \( "," r1 \)\{1,3\} "\]"/,
    );
    expect(jsonSchemaToGbnf({ type: "array", maxItems: 0 })).toMatch(/root ::= "\[\]"/);
  });

  it("refs become rules (recursion allowed)", () => {
    const g = jsonSchemaToGbnf({
      $defs: { n: { type: "object", properties: { next: { anyOf: [{ $ref: "#/$defs/n" }, { type: "null" }] } } } },
      $ref: "#/$defs/n",
    });
    expect(g).toMatch(/root ::= r1\n/);
    expect(g).toMatch(/\( r1 \| null \)/);
  });

  it("lists every unsupported keyword with where it is", () => {
    const bad = {
      type: "object",
      properties: {
        a: { type: "string", pattern: "x" },
        b: { type: "number", minimum: 0 },
        c: { type: "string", format: "email" },
      },
      allOf: [],
    };
    let msg = "";
    try {
      jsonSchemaToGbnf(bad);
    } catch (e) {
      expect((e as { code: string }).code).toBe("ERR_GRAMMAR");
      msg = (e as Error).message;
    }
    expect(msg).toContain("#/allOf");
    expect(msg).toContain("#/properties/a/pattern");
    expect(msg).toContain("#/properties/b/minimum");
    expect(msg).toContain('format "email"');
    expect(() => jsonSchemaToGbnf({ type: "array", maxItems: 100000 })).toThrow(/maxItems/);
    expect(() => jsonSchemaToGbnf({ $ref: "https://x/y" })).toThrow(/only local refs/);
    expect(() => jsonSchemaToGbnf("nope")).toThrow(/Expected a JSON schema/);
  });

  it("escapes literals and builds the json_object grammar", () => {
    expect(gbnfLiteral('a"b\\c\n')).toBe('"a\\"b\\\\c\\x0a"');
    expect(jsonObjectGbnf()).toMatch(/^root ::= object\n/);
  });
});
