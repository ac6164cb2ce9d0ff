//! The whole stack end to end: the main job, and the README's examples
//! applied by real workers behind the real gateway and broker.

#![allow(clippy::unwrap_used)]

mod functions;
mod readme;
mod run;
mod scaling;
