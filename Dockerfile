# llmserve's OpenAI-compatible server in a container. UNTESTED: Docker is not available where this
# file was written (it was checked by reading only); please report problems.
#
#   docker build -t llmserve .
#   docker run --rm -p 8080:8080 -v llmserve-models:/models llmserve -m hf:OWNER/REPO:Q4_K_M
#   docker run --rm -p 8080:8080 -v "$PWD:/models" llmserve -m /models/model.gguf --api-key KEY
#
# Stage 1 compiles the addon and the TypeScript and packs the npm tarball, exactly as published;
# stage 2 installs only that tarball's runtime dependencies into a slim image (no compiler, no
# cmake, no dev dependencies) and runs as the unprivileged `node` user.

FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the dev tools' install hooks (node-llama-cpp's, for the parity tests) are not
# needed to build.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
# The release addon without the native test binary (scripts/prebuild.mjs: build-prebuild/, strip,
# copy to prebuilds/linux-<arch>/), the TypeScript, then the tarball users would get from npm.
RUN npm run build:ts \
 && node scripts/prebuild.mjs \
 && npm pack --ignore-scripts --pack-destination /tmp \
 && mv /tmp/llmserve-*.tgz /tmp/llmserve.tgz

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    LLMSERVE_MODELS=/models \
    LLMSERVE_HOST=0.0.0.0 \
    LLMSERVE_PORT=8080
COPY --from=build /tmp/llmserve.tgz /tmp/llmserve.tgz
RUN npm install -g --omit=dev --ignore-scripts --no-audit --no-fund /tmp/llmserve.tgz \
 && rm /tmp/llmserve.tgz \
 && npm cache clean --force \
 && mkdir -p /models \
 && chown node:node /models
# The model cache (hf: downloads land here) and the place to mount local .gguf files.
VOLUME ["/models"]
USER node
WORKDIR /home/node
EXPOSE 8080
# /health answers {"status":"ok"} without a key once the model is loaded (node's fetch: the slim image
# has no curl). The long start period covers a first hf: download of a large model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.LLMSERVE_PORT || 8080) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) drains in-flight requests and exits 0 (llmserve serve --shutdown-timeout).
ENTRYPOINT ["llmserve", "serve"]
CMD ["--help"]
