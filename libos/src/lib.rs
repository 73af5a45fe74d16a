//! `libos`: the simulated-TEE runtime for unmodified programs.
//!
//! * [`manifest`]: Gramine-compatible manifests (TOML → [`manifest::RawManifest`] →
//!   validated [`Manifest`]), the subset of the project's `spec/manifest.md`.
//! * [`template`]: Gramine-style Jinja templates rendered with minijinja.
//! * [`build`]: the `pfs manifest` pipeline (render, validate, expand trusted files).
//! * [`hashcache`]: the trusted-file hash cache of `pfs manifest`.
//! * [`mod@measure`]: the documented simulated measurement (never an SGX MRENCLAVE).
//! * [`launcher`]: `pfs run`, a private mount namespace with a chroot view of the
//!   manifest's mount table, trusted-file verification and the program's exit status.
//!
//! **This is a simulated TEE.** Nothing here protects the program or its data against the
//! host: root on the host can read the program's plaintext view through `/proc/PID/root`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod exit;
pub mod hashcache;
pub mod launcher;
pub mod manifest;
pub mod measure;
#[allow(unsafe_code)]
mod sys;
pub mod template;

pub use manifest::{Manifest, Mode};
pub use measure::{SimMeasurement, measure};
