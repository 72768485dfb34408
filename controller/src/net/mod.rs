//! What every listener of the controller does so that no peer can hold it (issue 17):
//! accept loops that survive running out of file descriptors (`accept`), caps on
//! connections in total and per source address (`gate`), log lines for peer-triggered
//! events at most once per period (`throttle`), and the HTTP server of the API and the
//! registry with header, idle and body-stall timeouts (`http`, `stall`). The broker's TLS
//! listener uses the same pieces (`broker::tls_front`).

pub mod accept;
pub mod gate;
pub mod http;
pub mod stall;
pub mod throttle;

pub use accept::{Acceptor, Incoming};
pub use gate::{Admitted, ConnectionGate, GateLimits, Refusal};
pub use http::HttpLimits;
pub use throttle::{LogThrottle, SharedThrottle};
