# Builds the Switchyard binaries (producers, consumers, switchyard) into one small image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p producers -p consumers -p switchyard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/producers /src/target/release/consumers /src/target/release/switchyard /usr/local/bin/
USER 10001:10001
CMD ["producers", "--help"]
