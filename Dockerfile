# The accountable binary. librdkafka builds from rdkafka's bundled source,
# which needs a C toolchain, make and perl, but not cmake; webauthn-rs links
# OpenSSL (libssl-dev is in the build image, libssl3 in the runtime one).
# The account pages and the console are built first, with Node.js, into
# web/dist, which the binary embeds.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npx --no-install vite build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /web/dist web/dist
RUN cargo build --release --locked --bin accountable

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/accountable /usr/local/bin/accountable
# The working folder holds what development makes for itself (the master key
# in .data/master.key); compose mounts one volume here for every container,
# so that they share one key. A new named volume takes this folder's owner.
RUN mkdir /data && chown 65534:65534 /data
WORKDIR /data
USER 65534
ENTRYPOINT ["accountable"]
