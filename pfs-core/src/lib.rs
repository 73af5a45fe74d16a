//! Gramine Protected Files engine (work in progress).
#![forbid(unsafe_code)]
