//! Coracle wire contract.
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

/// Version byte in front of every encoded body.
pub const PROTOCOL_VERSION: u8 = 1;
