//! S3-compatible object storage for blobs (`[blobs.s3]`): the config, SigV4 signing and
//! pre-signing (`sigv4.rs`, pure, pinned by AWS's test vectors), a small blocking client
//! (`client.rs`: PUT/GET/HEAD of objects, the bucket check, pre-signed GET URLs) and its
//! errors. The registry's `BlobStore` writes through to it (`registry/remote_blobs.rs`).
//!
//! Limits: path-style requests only; one bucket; no multipart uploads (a blob is one PUT,
//! which S3 caps at 5 GB); a store behind TLS must have a certificate the system trusts.

mod client;
mod config;
mod error;
pub mod sigv4;

pub use client::ObjectStore;
pub use config::{BlobsSection, S3Config};
pub use error::ObjectStoreError;
