//! Integration tests of the producers crate and of the files that describe
//! how to run Switchyard (docker-compose.yml, the README's examples).

#![allow(clippy::unwrap_used)]

mod gateway;
mod load;
mod publish;
mod relay;
mod setup;
