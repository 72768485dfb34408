//! Coracle images: the OCI image model, layer codecs, hardened unpack, the device's
//! content-addressed store and delta layers. Synchronous code, no async runtime.
//!
//! Built out by issue 4; today only the crate exists so the workspace has its shape.
