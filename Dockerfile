# syntax=docker/dockerfile:1
# Multi-stage build of `bridge`: the REST API, call engine and simulated carrier.
#
#   docker build -t bridge .
#   docker run -p 8080:8080 -v bridge-data:/data -e BRIDGE_API_TOKEN=change-me bridge
#
# The image listens on 0.0.0.0:8080, so the REST API is reachable by anyone who
# can reach the published port. Always set a token of your own
# (BRIDGE_API_TOKEN or --api-token). Without one, the bridge generates a token at
# first start and prints it once, to the container log.
#
# Recording URLs default to http://<listen address>; for the wildcard 0.0.0.0
# that is http://localhost:8080/recordings/..., which works only inside the
# container. Set `[server] public_url` in a config file
# (BRIDGE_CONFIG=/data/bridge.toml, see bridge/config.example.toml) to the
# address clients use. Inside the container, ws://127.0.0.1 is the container
# itself: a bot elsewhere needs wss:// (or `bot.allow_insecure_ws = true`).

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: Cargo needs every member's manifest. .dockerignore
# keeps target/, data/ and .git out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p bridge --locked \
 && install -D -m 0755 target/release/bridge /out/bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /data --shell /usr/sbin/nologin bridge \
 && mkdir -p /data \
 && chown bridge:bridge /data
COPY --from=build /out/bridge /usr/local/bin/bridge
USER bridge
WORKDIR /data
# The SQLite database (bridge.db) and recordings/ live here.
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["bridge"]
CMD ["serve", "--http", "0.0.0.0:8080", "--data-dir", "/data"]
