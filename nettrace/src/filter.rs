//! `--pid` / `--port` selection (each list: any of; both lists: both must match).

use tracer::model::ConnectionTuple;

/// The connections the user asked to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub pids: Vec<u32>,
    /// Matches the local or the remote port.
    pub ports: Vec<u16>,
}

impl Selection {
    /// Whether any filter is set.
    pub fn is_active(&self) -> bool {
        !self.pids.is_empty() || !self.ports.is_empty()
    }

    /// Whether `tuple` passes every filter that is set.
    pub fn matches(&self, tuple: &ConnectionTuple) -> bool {
        let pid_ok = self.pids.is_empty() || self.pids.contains(&tuple.pid);
        let port_ok = self.ports.is_empty()
            || self.ports.contains(&tuple.sport)
            || self.ports.contains(&tuple.dport);
        pid_ok && port_ok
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tracer::model::Protocol;

    use super::*;

    fn tuple(pid: u32, sport: u16, dport: u16) -> ConnectionTuple {
        ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dst: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport,
            dport,
            pid,
            netns: 1,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn empty_selection_matches_everything() {
        let all = Selection::default();
        assert!(!all.is_active());
        assert!(all.matches(&tuple(1, 2, 3)));
    }

    #[test]
    fn port_matches_either_end_and_pids_are_any_of() {
        let s = Selection {
            pids: vec![10, 20],
            ports: vec![8080],
        };
        assert!(s.matches(&tuple(10, 8080, 5000)));
        assert!(s.matches(&tuple(20, 5000, 8080)));
        assert!(!s.matches(&tuple(30, 8080, 5000)));
        assert!(!s.matches(&tuple(10, 5000, 5001)));
    }
}
