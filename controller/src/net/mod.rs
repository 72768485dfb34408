//! What every listener of the controller does so that no peer can hold it (issue 17):
//! accept loops that survive running out of file descriptors (`accept`), caps on
//! connections in total and per source address (`gate`), log lines for peer-triggered
//! events at most once per period (`throttle`), and the HTTP server of the API and the
//! registry with header, idle and body-stall timeouts (`http`, `stall`), over TLS with the
//! controller's certificate when the listener serves HTTPS (`tls`: acceptor and a
//! handshake bounded in time). The broker's TLS listener uses the same pieces
//! (`broker::tls_front`). `address::dialable` turns a wildcard bind into a loopback address.

pub mod accept;
pub mod address;
pub mod gate;
pub mod http;
pub mod stall;
pub mod throttle;
pub mod tls;

pub use accept::{Acceptor, Incoming};
pub use address::dialable;
pub use gate::{Admitted, ConnectionGate, GateLimits, Refusal};
pub use http::HttpLimits;
pub use throttle::{LogThrottle, SharedThrottle};
