//! `ConnectionGate`: how many connections one listener holds, in total and per source IP.
//! Admission hands out an `Admitted` guard that gives its place back when dropped, so a
//! connection task that ends in any way (done, error, panic, abort) frees its place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    pub total: usize,
    pub per_ip: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `total` connections already.
    Total,
    /// This source address holds `per_ip` connections already.
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open connections of one listener; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    limits: GateLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its place is given back on drop.
#[derive(Debug)]
pub struct Admitted {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionGate {
    pub fn new(limits: GateLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Takes a place for a connection from `ip`, or says which cap it would break.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut counts = lock(&self.counts);
        if counts.total >= self.limits.total {
            return Err(Refusal::Total);
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.limits.per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Admitted {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_ip) = counts.per_ip.get_mut(&self.ip) {
            *from_ip -= 1;
            // Forget addresses with nothing open, so the map stays as small as what is open.
            if *from_ip == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Counting never panics half way, so a poisoned lock still holds consistent counts.
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn gate_refuses_over_the_per_ip_cap_but_admits_other_addresses() {
        let gate = ConnectionGate::new(GateLimits {
            total: 10,
            per_ip: 2,
        });
        let _a = gate.admit(ip(1)).unwrap();
        let b = gate.admit(ip(1)).unwrap();
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        let _c = gate.admit(ip(2)).unwrap();
        drop(b);
        assert!(gate.admit(ip(1)).is_ok());
    }

    #[test]
    fn gate_refuses_over_the_total_cap_and_admits_again_when_one_closes() {
        let gate = ConnectionGate::new(GateLimits {
            total: 3,
            per_ip: 3,
        });
        let mut open: Vec<_> = (1..=3).map(|n| gate.admit(ip(n)).unwrap()).collect();
        assert_eq!(gate.admit(ip(4)).unwrap_err(), Refusal::Total);
        assert_eq!(gate.open(), 3);
        open.pop();
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(ip(4)).is_ok());
    }

    #[test]
    fn gate_forgets_addresses_with_nothing_open() {
        let gate = ConnectionGate::new(GateLimits {
            total: 100,
            per_ip: 1,
        });
        for n in 0..50 {
            drop(gate.admit(ip(n)).unwrap());
        }
        assert!(lock(&gate.counts).per_ip.is_empty());
        assert_eq!(gate.open(), 0);
    }
}
