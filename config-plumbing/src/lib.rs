//! Config plumbing shared by auth-sidecar and omni2-core.
//!
//! YAML text → [`parse()`] (`${VAR}` interpolation, every type error and unknown key as a
//! [`Problem`] with its path) → the crate's own `Raw*` structs → the crate's own checks,
//! which use the field helpers here ([`duration()`]) and push more problems.
//!
//! Layout: [`problems`](mod@problems) (what is reported), [`env`](mod@env) (where variables come from and
//! `${VAR}` expansion), [`duration`](mod@duration) (the one duration syntax), [`size`](mod@size) (the one byte-size syntax), [`parse`](mod@parse) (YAML to raw
//! structs, collecting every type error), and with feature `watch`, `watch` (reload
//! triggers: file changes and SIGHUP).

pub mod duration;
pub mod env;
pub mod parse;
pub mod problems;
pub mod size;
#[cfg(feature = "watch")]
pub mod watch;

pub use duration::{RawDuration, duration, parse_duration};
pub use env::{Env, ProcessEnv, expand, interpolate};
pub use parse::{Cleared, Parsed, parse};
pub use problems::{Problem, Problems};
pub use size::{RawSize, parse_size, size};
