//! `/proc/net/dev` → `net.<iface>` per interface and `system.net` for the host.

use std::path::PathBuf;
use std::time::Instant;

use super::counter::CounterFile;
use super::net_errors::NetErrors;
use super::{Devices, lines, rate};
use crate::frame::Frame;

/// The order of [`Counters`]; `received` and `sent` come first, for the host totals.
const DIMS: [&str; 8] = [
    "received",
    "sent",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_drops",
    "tx_drops",
];

/// One interface's counters, in [`DIMS`] order.
#[derive(Clone, Copy)]
struct Counters([u64; 8]);

/// Where [`net_errors::DIMS`](super::net_errors::DIMS) are in [`DIMS`].
const ERRORS: [usize; 4] = [4, 5, 6, 7];

pub(super) struct Net {
    ifaces: CounterFile<Counters, 8>,
    errors: NetErrors,
}

impl Net {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            ifaces: CounterFile::new(
                path,
                Devices::new("net.", "network interfaces"),
                "system.net",
                DIMS,
            ),
            errors: NetErrors::new(),
        }
    }

    pub(super) fn sample(&mut self, now: Instant, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.ifaces.begin(now, buf) {
            return;
        }
        self.errors.begin();
        for (name, cur) in lines(buf).filter_map(parse) {
            // Loopback traffic is the host talking to itself, not load on the network.
            if name == "lo" {
                continue;
            }
            let rates = self.ifaces.device(frame, name, cur, |prev, cur, secs| {
                std::array::from_fn(|i| rate(prev.0[i], cur.0[i], secs))
            });
            if let Some(rates) = rates {
                self.errors
                    .add(ERRORS.map(|i| rates.get(i).copied().flatten()));
            }
        }
        self.ifaces.end(frame);
        self.errors.end(self.ifaces.has_rates(), frame);
    }
}

/// `  eth0: 89756410 5633 0 0 0 0 0 0 426199 4833 0 0 0 0 0 0`: receive bytes, packets,
/// errs, drop, fifo, frame, compressed, multicast, then transmit bytes, packets, errs,
/// drop, ... Old kernels print no space after the colon; interface names cannot contain
/// one. The two header lines have no colon and are skipped like any malformed line.
fn parse(line: &str) -> Option<(&str, Counters)> {
    let (name, rest) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let mut v = [0u64; 12];
    for slot in &mut v {
        *slot = fields.next()?.parse().ok()?;
    }
    let [
        rx_bytes,
        rx_packets,
        rx_errs,
        rx_drop,
        _,
        _,
        _,
        _,
        tx_bytes,
        tx_packets,
        tx_errs,
        tx_drop,
    ] = v;
    Some((
        name,
        Counters([
            rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errs, tx_errs, rx_drop, tx_drop,
        ]),
    ))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, charts, tick};

    const HEADER: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
";

    fn net_dev(rows: &[&str]) -> String {
        let mut s = HEADER.to_string();
        for row in rows {
            s.push_str(row);
            s.push('\n');
        }
        s
    }

    #[test]
    fn net_rates_come_from_counter_deltas() {
        let dir = ProcDir::new();
        dir.write(
            "net/dev",
            &net_dev(&[
                "    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0",
                "  eth0: 89756410    5633    0    0    0     0          0         0   426199    4833    0    0    0     0       0          0",
                " wlan0: 1000000     1000    5    1    0     0          0         0   200000     400    2    0    0     0       0          0",
            ]),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let first = tick(&mut sampler, now);
        assert!(first.samples.is_empty(), "no rates on the first tick");

        // Two seconds later.
        dir.write(
            "net/dev",
            &net_dev(&[
                "    lo:   93193    1029    0    0    0     0          0         0    93193    1029    0    0    0     0       0          0",
                "  eth0: 89956410    5833    2    4    0     0          0         0   446199    4933    6    8    0     0       0          0",
                " wlan0: 1100000     1100    5    1    0     0          0         0   300000     500    2    0    0     0       0          0",
            ]),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        let eth0 = |dim| frame.get("net.eth0", dim);
        assert_eq!(eth0("received"), Some(100_000.0));
        assert_eq!(eth0("sent"), Some(10_000.0));
        assert_eq!(eth0("rx_packets"), Some(100.0));
        assert_eq!(eth0("tx_packets"), Some(50.0));
        assert_eq!(eth0("rx_errors"), Some(1.0));
        assert_eq!(eth0("tx_errors"), Some(3.0));
        assert_eq!(eth0("rx_drops"), Some(2.0));
        assert_eq!(eth0("tx_drops"), Some(4.0));
        assert_eq!(frame.get("net.wlan0", "received"), Some(50_000.0));
        assert_eq!(frame.get("system.net", "received"), Some(150_000.0));
        assert_eq!(frame.get("system.net", "sent"), Some(60_000.0));
        let errors = |dim| frame.get("system.net_errors", dim);
        assert_eq!(errors("rx_errors"), Some(1.0));
        assert_eq!(errors("tx_errors"), Some(3.0));
        assert_eq!(errors("rx_drops"), Some(2.0));
        assert_eq!(errors("tx_drops"), Some(4.0));
        assert_eq!(
            charts(&frame),
            ["net.eth0", "net.wlan0", "system.net", "system.net_errors"]
        );
        assert_eq!(frame.samples.len(), 8 + 8 + 2 + 4);
    }

    #[test]
    fn a_net_counter_going_backwards_gives_no_rate_and_no_host_total() {
        let dir = ProcDir::new();
        dir.write(
            "net/dev",
            &net_dev(&[
                "eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0",
                "eth1: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0",
            ]),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        // eth0's receive counters were reset (driver reloaded).
        dir.write(
            "net/dev",
            &net_dev(&[
                "eth0: 1000 10 0 0 0 0 0 0 8000 80 0 0 0 0 0 0",
                "eth1: 200 2 0 0 0 0 0 0 300 3 0 0 0 0 0 0",
            ]),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("net.eth0", "received"), None);
        assert_eq!(frame.get("net.eth0", "rx_packets"), None);
        assert_eq!(frame.get("net.eth0", "sent"), Some(1000.0));
        assert_eq!(frame.get("system.net", "received"), None);
        assert_eq!(frame.get("system.net", "sent"), Some(1200.0));
    }

    #[test]
    fn an_error_counter_going_backwards_gives_no_host_error_rate() {
        let dir = ProcDir::new();
        dir.write(
            "net/dev",
            &net_dev(&[
                "eth0: 0 0 10 20 0 0 0 0 0 0 30 40 0 0 0 0",
                "eth1: 0 0 1 1 0 0 0 0 0 0 1 1 0 0 0 0",
            ]),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let first = tick(&mut sampler, now);
        assert!(
            !charts(&first).contains(&"system.net_errors"),
            "no rates yet"
        );
        // eth0's rx_errs went backwards; its other counters and eth1's moved on.
        dir.write(
            "net/dev",
            &net_dev(&[
                "eth0: 0 0 5 22 0 0 0 0 0 0 32 44 0 0 0 0",
                "eth1: 0 0 3 1 0 0 0 0 0 0 1 5 0 0 0 0",
            ]),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        let errors = |dim| frame.get("system.net_errors", dim);
        assert_eq!(errors("rx_errors"), None);
        assert_eq!(frame.get("net.eth1", "rx_errors"), Some(1.0));
        assert_eq!(errors("rx_drops"), Some(1.0));
        assert_eq!(errors("tx_errors"), Some(1.0));
        assert_eq!(errors("tx_drops"), Some(4.0));
    }

    #[test]
    fn old_kernel_lines_without_a_space_after_the_colon_are_read() {
        let dir = ProcDir::new();
        dir.write(
            "net/dev",
            &net_dev(&["  eth0:1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0"]),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write(
            "net/dev",
            &net_dev(&["  eth0:1500 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0"]),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("net.eth0", "received"), Some(500.0));
    }

    #[test]
    fn a_vanished_interface_stops_being_emitted() {
        let dir = ProcDir::new();
        let both = net_dev(&[
            "eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0",
            "veth1: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0",
        ]);
        dir.write("net/dev", &both);
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write(
            "net/dev",
            &net_dev(&["eth0: 2 2 0 0 0 0 0 0 2 2 0 0 0 0 0 0"]),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        let eth0 = ["net.eth0", "system.net", "system.net_errors"];
        assert_eq!(charts(&frame), eth0);
        // When it comes back it starts afresh: no rate against its old counters.
        dir.write("net/dev", &both.replace("eth0: 1 1", "eth0: 3 3"));
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        assert_eq!(charts(&frame), eth0);
    }

    #[test]
    fn interfaces_beyond_the_cap_are_ignored() {
        let dir = ProcDir::new();
        let mut rows = String::from(HEADER);
        for i in 0..100 {
            writeln!(rows, "veth{i}: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0").expect("write");
        }
        dir.write("net/dev", &rows);
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(
            charts(&frame).len(),
            64 + 2,
            "64 interfaces and the host's two"
        );
        assert!(frame.get("net.veth63", "received").is_some());
        assert!(frame.get("net.veth64", "received").is_none());
    }
}
