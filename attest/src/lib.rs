//! `attest`: RA-TLS certificates, offline Intel SGX DCAP verification, a
//! key-release policy, and a key server and client speaking Gramine's
//! secret-provisioning protocol.
//!
//! The crate keeps "cryptographically valid" ([`dcap`], [`ratls`]) apart from
//! "acceptable to this data owner" ([`policy`]). Simulated evidence exists
//! only with the `insecure-sim` cargo feature (module `sim`).
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs)]

pub mod attester;
pub mod client;
pub mod clock;
pub mod collateral;
mod conn_table;
pub mod dcap;
pub mod evidence;
mod log_limit;
pub mod pcs;
mod peer_wait;
pub mod policy;
pub mod quote;
pub mod ratls;
pub mod server;
#[cfg(feature = "insecure-sim")]
pub mod sim;
pub mod tls;
pub mod wire;

pub use attester::{AttestError, Attester, EvidenceKind, GramineAttester};
pub use dcap::{Collateral, DcapVerifier, VerifyError};
pub use evidence::{EnclaveIdentity, QuoteVerifier, TcbStatus, TeeType, VerifiedEvidence};
pub use policy::{Grant, KeyReleasePolicy, Policy, PolicyError, Refusal};
pub use ratls::{RaTlsError, RaTlsVerifier};
