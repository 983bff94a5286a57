# Multi-stage build of the one `coexist` binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY benches benches
RUN cargo build --release --locked --bin coexist

FROM debian:bookworm-slim
RUN useradd --system --no-create-home coexist
COPY --from=build /src/target/release/coexist /usr/local/bin/coexist
COPY examples /usr/share/coexist/examples
USER coexist
ENTRYPOINT ["coexist"]
CMD ["--help"]
