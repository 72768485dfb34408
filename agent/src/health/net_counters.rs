//! A container's network traffic: the byte counters of every interface in its own network
//! namespace (`/proc/PID/net/dev` shows the namespace of PID), loopback excluded. A
//! container sharing the host's namespace has no traffic of its own to report.

use std::fs;
use std::path::Path;

/// Bytes received and sent, summed over interfaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetBytes {
    pub rx: u64,
    pub tx: u64,
}

/// Sums `/proc/net/dev` text (two header lines, then `name: rx_bytes … tx_bytes …`, the
/// transmit block starting at the ninth number), leaving out `lo`. `None` when a data
/// line does not parse.
pub fn net_dev_bytes(text: &str) -> Option<NetBytes> {
    let mut total = NetBytes::default();
    for line in text.lines().skip(2) {
        let (name, numbers) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = numbers
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let (rx, tx) = (fields.first()?, fields.get(8)?);
        total.rx = total.rx.saturating_add(*rx);
        total.tx = total.tx.saturating_add(*tx);
    }
    Some(total)
}

/// The traffic of process `pid`'s network namespace under `proc_root` (`/proc`), or zero
/// when it is the namespace of this process (host networking) or cannot be read (the
/// container just exited).
pub fn container_net_bytes(proc_root: &Path, pid: i32) -> NetBytes {
    let own = fs::read_link(proc_root.join("self/ns/net"));
    let theirs = fs::read_link(proc_root.join(format!("{pid}/ns/net")));
    match (own, theirs) {
        (Ok(own), Ok(theirs)) if own != theirs => {
            fs::read_to_string(proc_root.join(format!("{pid}/net/dev")))
                .ok()
                .and_then(|text| net_dev_bytes(&text))
                .unwrap_or_default()
        }
        _ => NetBytes::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0
  eth0: 1048576     900    0    0    0     0          0         0   204800     300    0    0    0     0       0          0
 net1:     1024       9    0    0    0     0          0         0     2048      10    0    0    0     0       0          0
";

    #[test]
    fn sums_every_interface_but_loopback() {
        assert_eq!(
            net_dev_bytes(NET_DEV),
            Some(NetBytes {
                rx: 1_048_576 + 1024,
                tx: 204_800 + 2048
            })
        );
    }

    #[test]
    fn refuses_text_it_does_not_understand() {
        assert_eq!(net_dev_bytes("a\nb\neth0: 1 2 3\n"), None);
        assert_eq!(net_dev_bytes("a\nb\nno colon here\n"), None);
        assert_eq!(net_dev_bytes("a\nb\n"), Some(NetBytes::default()));
    }

    #[test]
    fn this_process_namespace_counts_as_host_networking() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            container_net_bytes(Path::new("/proc"), me),
            NetBytes::default()
        );
    }
}
