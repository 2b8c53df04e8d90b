/** The typed surface of the native addon (native/napi). Internal: use the classes in index.ts. */

export type GgufScalar = number | bigint | boolean | string;
export interface GgufArraySummary {
  type: "array";
  elementType: string;
  length: number;
}
export type GgufMetaValue =
  | GgufScalar
  | string[]
  | boolean[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | GgufArraySummary
  | GgufMetaValue[];

export interface GgufTensorSummary {
  name: string;
  shape: number[];
  type: string;
  offset: number;
  nbytes: number;
}

export interface GgufContents {
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, GgufMetaValue>;
  tensors: GgufTensorSummary[];
}

export interface NativeModelOptions {
  threads: number;
  contextSize: number;
  kvF16: boolean;
  kvCacheTokens: number;
  kvBlockSize: number;
  maxBatchTokens: number;
  maxSequences: number;
  maxQueue: number;
  prefixCache: boolean;
  staticBatching: boolean;
}

export interface NativeStats {
  steps: number;
  batchTokens: number;
  batchSequences: number;
  maxBatchTokensSeen: number;
  maxBatchSequencesSeen: number;
  promptTokens: number;
  prefillTokens: number;
  reusedTokens: number;
  generatedTokens: number;
  requests: number;
  finished: number;
  aborted: number;
  errors: number;
  preemptions: number;
  sessionEvictions: number;
  prefixLookups: number;
  prefixHits: number;
  running: number;
  waiting: number;
  sessions: number;
  blocksTotal: number;
  blocksUsed: number;
  blocksCached: number;
  blocksFree: number;
  blockSize: number;
  kvTokensHeld: number;
}

export interface NativeModelInfo {
  arch: string;
  nVocab: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  headDim: number;
  nCtxTrain: number;
  contextSize: number;
  ropeFreqBase: number;
  rmsEps: number;
  tiedOutput: boolean;
  threads: number;
  kvCacheTokens: number;
  kvBlockSize: number;
  maxBatchTokens: number;
  maxSequences: number;
  kernels: string;
  weightTypes: Record<string, number>;
}

export interface NativeGenerateParams {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  logprobs: number;
  stopTokens: number[];
  priority?: number;
  session?: number;
  pin?: boolean;
  adapter?: number;
}

export interface NativeTokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

/** One event from the engine thread for a request. */
export interface NativeEvent {
  tokens?: number[];
  logprobs?: NativeTokenLogprob[];
  done?: boolean;
  finishReason?: "length" | "eos" | "abort";
  error?: { code: string; message: string };
  timings?: { promptMs: number; generateMs: number; promptTokens: number; generatedTokens: number; reusedTokens: number };
}

export interface NativeModel {
  info(): NativeModelInfo;
  /** Queues a request on the engine thread; returns its id. `onEvent` runs on the JS thread. */
  generate(tokens: Int32Array, params: NativeGenerateParams, onEvent: (e: NativeEvent) => void): number;
  cancel(id: number): void;
  stats(): NativeStats;
  /** Releases a session's (or pinned prefix's) KV blocks. */
  endSession(session: number): void;
  /** Logits for the last token ([nVocab]) or for every token ([n * nVocab]) of a fresh sequence. */
  evaluate(tokens: Int32Array, logitsAll: boolean): Promise<Float32Array>;
  dispose(): Promise<void>;
}

export interface NativeSynthOptions {
  arch: string;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  context: number;
  vocabFrom: string;
  vocabSize: number;
  type: string;
  seed: number;
  tiedOutput: boolean;
}

export interface NativeAddon {
  readGguf(path: string, maxArrayLength?: number): Promise<GgufContents>;
  kernelIsa(): string;
  loadModel(path: string, opts: NativeModelOptions, onProgress?: (fraction: number) => void): Promise<NativeModel>;
  synth(opts: NativeSynthOptions, outPath: string, onProgress?: (fraction: number) => void): Promise<{ notes: string[] }>;
}
