//! Owner of the `nt_tcp_state` program (tracepoint `sock:inet_sock_set_state`, Linux 4.16+) and
//! its map `NT_TCP_STATES`: TCP state transitions per socket, in order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::TracePoint,
};
use tracer_common::{
    names::{GLOBAL_INET_SOCK_SET_STATE, MAP_COUNTERS, MAP_TCP_STATES, PROG_TCP_STATE},
    tcp_state::{MAX_TRANSITIONS, TcpStateRecord},
};

use super::{counters::KernelCounters, layout, object, privileges, tracefs};
use crate::{Error, Result};

const TRACEPOINT: (&str, &str) = ("sock", "inet_sock_set_state");
#[cfg(test)]
use tracer_common::linux::AF_INET;
use tracer_common::linux::AF_INET6;

/// The kernel's TCP states (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,
    /// A number this library does not know (a newer kernel).
    Other(u8),
}

impl From<u8> for TcpState {
    fn from(value: u8) -> Self {
        match value {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            13 => Self::BoundInactive,
            other => Self::Other(other),
        }
    }
}

/// What one socket went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketTransitions {
    /// Local address and port as of the latest transition.
    pub local: SocketAddr,
    /// Remote address and port as of the latest transition.
    pub remote: SocketAddr,
    /// Transitions in the order they happened (at most [`MAX_TRANSITIONS`]).
    pub transitions: Vec<(TcpState, TcpState)>,
    /// Transitions seen, including any beyond what `transitions` holds.
    pub total: u16,
}

/// Sizing of the probe's map.
#[derive(Clone, Copy, Debug)]
pub struct TcpStateConfig {
    /// How many sockets the map can hold; later sockets are counted as `tcp_state_map_full`.
    pub max_sockets: u32,
}

impl Default for TcpStateConfig {
    fn default() -> Self {
        Self {
            max_sockets: 16_384,
        }
    }
}

/// The loaded and attached probe. Dropping it detaches the program and frees its maps.
pub struct TcpStateProbe {
    ebpf: Ebpf,
}

impl TcpStateProbe {
    /// Checks privileges, mounts tracefs if needed, resolves the tracepoint's field offsets from
    /// the running kernel, then loads and attaches the program.
    pub fn load(config: TcpStateConfig) -> Result<Self> {
        if config.max_sockets == 0 {
            return Err(Error::InvalidConfig("max_sockets must be > 0".to_owned()));
        }
        privileges::require_bpf_privileges()?;
        let tracefs = tracefs::ensure_mounted()?;
        let format = layout::inet_sock_set_state(&tracefs)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_INET_SOCK_SET_STATE, &format, true)
            .map_max_entries(MAP_TCP_STATES, config.max_sockets)
            .load(object::tcp_state_bytes()?)
            .map_err(crate::kernel::privileges::load_error)?;
        let program: &mut TracePoint = ebpf
            .program_mut(PROG_TCP_STATE)
            .ok_or(Error::MissingObject {
                kind: "program",
                name: PROG_TCP_STATE,
            })?
            .try_into()
            .map_err(|e| program_error(PROG_TCP_STATE, e))?;
        program
            .load()
            .map_err(|e| program_error(PROG_TCP_STATE, e))?;
        program
            .attach(TRACEPOINT.0, TRACEPOINT.1)
            .map_err(|e| program_error(PROG_TCP_STATE, e))?;
        Ok(Self { ebpf })
    }

    /// Every socket the probe has seen since it was attached.
    pub fn sockets(&self) -> Result<Vec<SocketTransitions>> {
        let map: HashMap<&MapData, u64, TcpStateRecord> =
            HashMap::try_from(self.ebpf.map(MAP_TCP_STATES).ok_or(Error::MissingObject {
                kind: "map",
                name: MAP_TCP_STATES,
            })?)
            .map_err(|e| map_error(MAP_TCP_STATES, e))?;
        let mut sockets = Vec::new();
        for entry in map.iter() {
            let (_skaddr, record) = entry.map_err(|e| map_error(MAP_TCP_STATES, e))?;
            sockets.push(decode(&record));
        }
        Ok(sockets)
    }

    /// The kernel-side counters (map full, read failures, overflowing records).
    pub fn counters(&self) -> Result<KernelCounters> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_COUNTERS).ok_or(Error::MissingObject {
                kind: "map",
                name: MAP_COUNTERS,
            })?)
            .map_err(|e| map_error(MAP_COUNTERS, e))?;
        KernelCounters::read(&map)
    }
}

fn program_error(program: &'static str, e: aya::programs::ProgramError) -> Error {
    crate::kernel::privileges::program_error(program, e)
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        source: Box::new(e),
    }
}

/// Turns a kernel record into addresses and states. Pure: unit-tested below.
fn decode(record: &TcpStateRecord) -> SocketTransitions {
    let address = |bytes: [u8; 16]| -> IpAddr {
        if record.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(bytes))
        } else {
            let [a, b, c, d, ..] = bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
    };
    let kept = usize::from(record.count).min(MAX_TRANSITIONS);
    let transitions = record
        .transitions
        .iter()
        .take(kept)
        .map(|t| (TcpState::from(t.old), TcpState::from(t.new)))
        .collect();
    SocketTransitions {
        local: SocketAddr::new(address(record.saddr), record.sport),
        remote: SocketAddr::new(address(record.daddr), record.dport),
        transitions,
        total: record.count,
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::tcp_state::TcpTransition;

    use super::*;

    #[test]
    fn decodes_ipv4_record_with_transitions_in_order() {
        let mut record = TcpStateRecord {
            family: AF_INET,
            sport: 40000,
            dport: 8080,
            count: 2,
            ..Default::default()
        };
        record.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        record.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        record.transitions[0] = TcpTransition { old: 7, new: 2 };
        record.transitions[1] = TcpTransition { old: 2, new: 1 };
        let decoded = decode(&record);
        assert_eq!(decoded.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(decoded.remote, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            decoded.transitions,
            vec![
                (TcpState::Close, TcpState::SynSent),
                (TcpState::SynSent, TcpState::Established)
            ]
        );
        assert_eq!(decoded.total, 2);
    }

    #[test]
    fn decodes_ipv6_and_caps_transitions_at_capacity() {
        let mut record = TcpStateRecord {
            family: AF_INET6,
            sport: 1,
            dport: 2,
            count: 40,
            ..Default::default()
        };
        record.saddr = Ipv6Addr::LOCALHOST.octets();
        record.daddr = Ipv6Addr::LOCALHOST.octets();
        let decoded = decode(&record);
        assert_eq!(decoded.local, "[::1]:1".parse().unwrap());
        assert_eq!(decoded.transitions.len(), MAX_TRANSITIONS);
        assert_eq!(decoded.total, 40);
    }

    #[test]
    fn unknown_state_numbers_are_kept() {
        assert_eq!(TcpState::from(99), TcpState::Other(99));
        assert_eq!(TcpState::from(10), TcpState::Listen);
    }
}
